#include "client/client.h"

#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include <google/protobuf/stubs/common.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace memaudit::client {
namespace {

// Cancels `context` once `interrupted` returns true; it is polled every
// 100 ms on a thread of its own, since the reader blocks.
class InterruptWatchdog {
 public:
  InterruptWatchdog(grpc::ClientContext* context, const std::function<bool()>& interrupted) {
    if (!interrupted) return;
    thread_ = std::thread([this, context, interrupted] {
      while (!stop_.load()) {
        if (interrupted()) {
          fired_ = true;
          context->TryCancel();
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
  }
  ~InterruptWatchdog() { Stop(); }

  // Stops polling; after it, fired() no longer changes.
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  bool fired() const { return fired_.load(); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<bool> fired_{false};
  std::thread thread_;
};

// Reads the server stream `start(context)` opens to its end, passing each
// message to `on_message`. A non-OK status from `on_message` cancels the
// call and is returned; an interruption returns CANCELLED "interrupted".
template <typename Message, typename Start>
absl::Status ReadStream(grpc::ClientContext* context, const std::function<bool()>& interrupted,
                        Start start,
                        const std::function<absl::Status(const Message&)>& on_message) {
  InterruptWatchdog watchdog(context, interrupted);
  std::unique_ptr<grpc::ClientReader<Message>> reader = start(context);
  Message message;
  absl::Status rejected;
  while (reader->Read(&message)) {
    if (!rejected.ok()) continue;  // cancelled: drain what is already in flight
    rejected = on_message(message);
    if (!rejected.ok()) context->TryCancel();
  }
  grpc::Status status = reader->Finish();
  watchdog.Stop();
  if (watchdog.fired()) return absl::CancelledError("interrupted");
  if (!rejected.ok()) return rejected;
  return FromGrpcStatus(status);
}

}  // namespace

namespace {

absl::Status CheckUtf8Under(const google::protobuf::Message& message, const std::string& prefix) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection* reflection = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const FieldDescriptor* field : fields) {
    const std::string name = prefix.empty() ? field->name() : prefix + "." + field->name();
    const int count = field->is_repeated() ? reflection->FieldSize(message, field) : 1;
    for (int i = 0; i < count; ++i) {
      const std::string path = field->is_repeated() ? absl::StrCat(name, "[", i, "]") : name;
      if (field->type() == FieldDescriptor::TYPE_STRING) {
        std::string scratch;
        const std::string& text =
            field->is_repeated()
                ? reflection->GetRepeatedStringReference(message, field, i, &scratch)
                : reflection->GetStringReference(message, field, &scratch);
        // The same check as the server's parser.
        if (!google::protobuf::internal::IsStructurallyValidUTF8(text.data(),
                                                                 static_cast<int>(text.size()))) {
          return absl::InvalidArgumentError(
              absl::StrCat(path, ": not valid UTF-8 (text fields must be)"));
        }
      } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        const google::protobuf::Message& child =
            field->is_repeated() ? reflection->GetRepeatedMessage(message, field, i)
                                 : reflection->GetMessage(message, field);
        if (absl::Status s = CheckUtf8Under(child, path); !s.ok()) return s;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckStringsAreUtf8(const google::protobuf::Message& message) {
  return CheckUtf8Under(message, "");
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

absl::StatusOr<ChannelSecurity> ChannelSecurity::FromFiles(const std::string& ca_path,
                                                           const std::string& cert_path,
                                                           const std::string& key_path,
                                                           const std::string& token_path) {
  auto read = [](const std::string& flag, const std::string& path) -> absl::StatusOr<std::string> {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read \"", path, "\""));
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
  };
  ChannelSecurity security;
  if (cert_path.empty() != key_path.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  // Reads `path` into `*pem` when it is set.
  auto read_into = [&read](const std::string& flag, const std::string& path,
                           std::string* pem) -> absl::Status {
    if (path.empty()) return absl::OkStatus();
    absl::StatusOr<std::string> text = read(flag, path);
    if (!text.ok()) return text.status();
    *pem = *std::move(text);
    return absl::OkStatus();
  };
  for (absl::Status status : {read_into("--tls-ca", ca_path, &security.ca_pem),
                              read_into("--tls-cert", cert_path, &security.cert_pem),
                              read_into("--tls-key", key_path, &security.key_pem)}) {
    if (!status.ok()) return status;
  }
  security.tls = !ca_path.empty() || !cert_path.empty();
  if (!token_path.empty()) {
    std::string text;
    if (absl::Status status = read_into("--token-file", token_path, &text); !status.ok()) {
      return status;
    }
    const absl::string_view first_line = absl::string_view(text).substr(0, text.find('\n'));
    security.token = std::string(absl::StripAsciiWhitespace(first_line));
    if (security.token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--token-file: \"", token_path, "\" holds no token on its first line"));
    }
  }
  return security;
}

Client::Client(const std::string& target, std::chrono::milliseconds timeout,
               const ChannelSecurity& security, std::chrono::milliseconds keepalive)
    : timeout_(timeout) {
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(256 << 20);
  arguments.SetMaxSendMessageSize(256 << 20);
  if (keepalive.count() > 0) {
    // Pings only while a call is open (a watch may see no event for
    // minutes), with no cap on pings between data frames.
    arguments.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(keepalive.count()));
    arguments.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, static_cast<int>(keepalive.count()));
    arguments.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
    arguments.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (security.tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = security.ca_pem;
    ssl.pem_private_key = security.key_pem;
    ssl.pem_cert_chain = security.cert_pem;
    credentials = grpc::SslCredentials(ssl);
    if (!security.server_name.empty()) {
      arguments.SetSslTargetNameOverride(security.server_name);
    }
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  if (!security.token.empty()) authorization_ = "Bearer " + security.token;
  channel_ = grpc::CreateCustomChannel(target, credentials, arguments);
  health_ = grpc::health::v1::Health::NewStub(channel_);
  models_ = v1::ModelService::NewStub(channel_);
  audits_ = v1::AuditService::NewStub(channel_);
}

void Client::Prepare(grpc::ClientContext* context, bool deadline) const {
  if (deadline && timeout_.count() > 0) {
    context->set_deadline(std::chrono::system_clock::now() + timeout_);
  }
  if (!authorization_.empty()) context->AddMetadata("authorization", authorization_);
}

absl::StatusOr<std::string> Client::Health(const std::string& service) {
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  auto response = Unary(health_.get(), &grpc::health::v1::Health::Stub::Check, request);
  if (!response.ok()) return response.status();
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response->status());
}

absl::Status Client::WaitUntilServing(std::chrono::milliseconds timeout,
                                      const std::string& service) {
  using grpc::health::v1::HealthCheckResponse;
  grpc::ClientContext context;
  Prepare(&context, /*deadline=*/false);
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  context.set_wait_for_ready(true);  // through "not listening yet"
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  std::unique_ptr<grpc::ClientReader<HealthCheckResponse>> reader =
      health_->Watch(&context, request);
  HealthCheckResponse response;
  std::string last = "no status";
  while (reader->Read(&response)) {
    last = HealthCheckResponse::ServingStatus_Name(response.status());
    if (response.status() == HealthCheckResponse::SERVING) {
      context.TryCancel();
      reader->Finish();  // CANCELLED, as asked
      return absl::OkStatus();
    }
  }
  const grpc::Status status = reader->Finish();
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return absl::DeadlineExceededError(
        absl::StrCat("health", service.empty() ? "" : " of " + service, " not SERVING within ",
                     timeout.count() / 1000.0, " s (last: ", last, ")"));
  }
  return FromGrpcStatus(status);
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

absl::StatusOr<v1::GetTrainingItemsResponse> Client::GetTrainingItems(
    const std::string& model, const std::vector<int64_t>& indices) {
  v1::GetTrainingItemsRequest request;
  request.set_model(model);
  for (int64_t index : indices) request.add_indices(index);
  return Unary(models_.get(), &v1::ModelService::Stub::GetTrainingItems, request);
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

absl::StatusOr<v1::ListAuditsResponse> Client::ListAudits(const v1::ListAuditsRequest& request) {
  return Unary(audits_.get(), &v1::AuditService::Stub::ListAudits, request);
}

absl::StatusOr<v1::AuditJob> Client::CancelAudit(const std::string& id) {
  v1::CancelAuditRequest request;
  request.set_id(id);
  return Unary(audits_.get(), &v1::AuditService::Stub::CancelAudit, request);
}

absl::StatusOr<v1::AuditJob> Client::CancelAudit(const std::string& id,
                                                 std::chrono::milliseconds timeout) {
  v1::CancelAuditRequest request;
  request.set_id(id);
  return Unary(audits_.get(), &v1::AuditService::Stub::CancelAudit, request, timeout);
}

absl::Status Client::StreamSamples(
    const v1::SampleRequest& request,
    const std::function<absl::Status(const v1::SampleResponse&)>& on_sample,
    const std::function<bool()>& interrupted) {
  if (absl::Status valid = CheckStringsAreUtf8(request); !valid.ok()) return valid;
  grpc::ClientContext context;
  Prepare(&context, /*deadline=*/false);
  return ReadStream<v1::SampleResponse>(
      &context, interrupted,
      [&](grpc::ClientContext* c) { return audits_->StreamSamples(c, request); }, on_sample);
}

absl::Status Client::Mitigate(
    const v1::MitigateRequest& request,
    const std::function<absl::Status(const v1::MitigatedSample&)>& on_seed,
    const std::function<bool()>& interrupted) {
  if (absl::Status valid = CheckStringsAreUtf8(request); !valid.ok()) return valid;
  grpc::ClientContext context;
  Prepare(&context, /*deadline=*/false);
  return ReadStream<v1::MitigatedSample>(
      &context, interrupted, [&](grpc::ClientContext* c) { return audits_->Mitigate(c, request); },
      on_seed);
}

absl::StatusOr<v1::AuditJob> Client::WatchAudit(
    const std::string& id, const std::function<void(const v1::AuditEvent&)>& on_event,
    const std::function<bool()>& interrupted) {
  grpc::ClientContext context;
  Prepare(&context, /*deadline=*/false);  // audits take as long as they take
  v1::WatchAuditRequest request;
  request.set_id(id);
  if (absl::Status valid = CheckStringsAreUtf8(request); !valid.ok()) return valid;
  std::optional<v1::AuditJob> finished;
  absl::Status status = ReadStream<v1::AuditEvent>(
      &context, interrupted,
      [&](grpc::ClientContext* c) { return audits_->WatchAudit(c, request); },
      [&](const v1::AuditEvent& event) {
        if (on_event) on_event(event);
        if (event.has_finished()) finished = event.finished();
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  if (!finished) return absl::InternalError("the watch ended without a final event");
  return *finished;
}

}  // namespace memaudit::client
