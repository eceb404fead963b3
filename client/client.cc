#include "client.h"

#include <atomic>
#include <thread>

namespace memaudit::client {

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

Client::Client(const std::string& target, std::chrono::milliseconds timeout) : timeout_(timeout) {
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(256 << 20);
  arguments.SetMaxSendMessageSize(256 << 20);
  channel_ = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments);
  health_ = grpc::health::v1::Health::NewStub(channel_);
  models_ = v1::ModelService::NewStub(channel_);
  audits_ = v1::AuditService::NewStub(channel_);
}

void Client::Prepare(grpc::ClientContext* context) const {
  if (timeout_.count() > 0) context->set_deadline(std::chrono::system_clock::now() + timeout_);
}

absl::StatusOr<std::string> Client::Health(const std::string& service) {
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  auto response = Unary(health_.get(), &grpc::health::v1::Health::Stub::Check, request);
  if (!response.ok()) return response.status();
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response->status());
}

absl::StatusOr<v1::ListModelsResponse> Client::ListModels() {
  return Unary(models_.get(), &v1::ModelService::Stub::ListModels, v1::ListModelsRequest());
}

absl::StatusOr<v1::ModelInfo> Client::GetModel(const std::string& name) {
  v1::GetModelRequest request;
  request.set_name(name);
  return Unary(models_.get(), &v1::ModelService::Stub::GetModel, request);
}

absl::StatusOr<v1::ModelInfo> Client::LoadModel(const std::string& name) {
  v1::LoadModelRequest request;
  request.set_name(name);
  return Unary(models_.get(), &v1::ModelService::Stub::LoadModel, request);
}

absl::StatusOr<v1::ModelInfo> Client::UnloadModel(const std::string& name) {
  v1::UnloadModelRequest request;
  request.set_name(name);
  return Unary(models_.get(), &v1::ModelService::Stub::UnloadModel, request);
}

absl::StatusOr<v1::SpectrumResponse> Client::Spectrum(const v1::SpectrumRequest& request) {
  return Unary(audits_.get(), &v1::AuditService::Stub::Spectrum, request);
}

absl::StatusOr<v1::SampleResponse> Client::Sample(const v1::SampleRequest& request) {
  return Unary(audits_.get(), &v1::AuditService::Stub::Sample, request);
}

absl::StatusOr<v1::EarlyMetricsResponse> Client::EarlyMetrics(
    const v1::EarlyMetricsRequest& request) {
  return Unary(audits_.get(), &v1::AuditService::Stub::EarlyMetrics, request);
}

absl::StatusOr<v1::CalibrationResponse> Client::Calibrate(const v1::CalibrationRequest& request) {
  return Unary(audits_.get(), &v1::AuditService::Stub::Calibrate, request);
}

absl::StatusOr<v1::AuditJob> Client::SubmitAudit(const v1::AuditRequest& request) {
  return Unary(audits_.get(), &v1::AuditService::Stub::SubmitAudit, request);
}

absl::StatusOr<v1::AuditJob> Client::GetAudit(const std::string& id) {
  v1::GetAuditRequest request;
  request.set_id(id);
  return Unary(audits_.get(), &v1::AuditService::Stub::GetAudit, request);
}

absl::StatusOr<v1::ListAuditsResponse> Client::ListAudits() {
  return Unary(audits_.get(), &v1::AuditService::Stub::ListAudits, v1::ListAuditsRequest());
}

absl::StatusOr<v1::AuditJob> Client::CancelAudit(const std::string& id) {
  v1::CancelAuditRequest request;
  request.set_id(id);
  return Unary(audits_.get(), &v1::AuditService::Stub::CancelAudit, request);
}

absl::StatusOr<v1::AuditJob> Client::WatchAudit(
    const std::string& id, const std::function<void(const v1::AuditEvent&)>& on_event,
    const std::function<bool()>& interrupted) {
  grpc::ClientContext context;  // no deadline: audits take as long as they take
  v1::WatchAuditRequest request;
  request.set_id(id);
  std::atomic<bool> done{false};
  std::atomic<bool> was_interrupted{false};
  std::thread watchdog;
  if (interrupted) {
    watchdog = std::thread([&] {
      while (!done.load()) {
        if (interrupted()) {
          was_interrupted = true;
          context.TryCancel();
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
  }
  std::unique_ptr<grpc::ClientReader<v1::AuditEvent>> reader =
      audits_->WatchAudit(&context, request);
  v1::AuditEvent event;
  std::optional<v1::AuditJob> finished;
  while (reader->Read(&event)) {
    if (on_event) on_event(event);
    if (event.has_finished()) finished = event.finished();
  }
  grpc::Status status = reader->Finish();
  done = true;
  if (watchdog.joinable()) watchdog.join();
  if (was_interrupted) return absl::CancelledError("interrupted");
  if (!status.ok()) return FromGrpcStatus(status);
  if (!finished) return absl::InternalError("the watch ended without a final event");
  return *finished;
}

}  // namespace memaudit::client
