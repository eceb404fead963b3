// A small client library for memaudit-server: one channel, typed calls,
// absl::Status errors carrying the server's code and message.
#ifndef MEMAUDIT_CLIENT_CLIENT_H_
#define MEMAUDIT_CLIENT_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "memaudit/v1/audit_service.grpc.pb.h"
#include "memaudit/v1/model_service.grpc.pb.h"

namespace memaudit::client {

absl::Status FromGrpcStatus(const grpc::Status& status);

class Client {
 public:
  // `target` is HOST:PORT. `timeout` bounds every unary call (0: none).
  Client(const std::string& target, std::chrono::milliseconds timeout);

  // grpc.health.v1: "SERVING", "NOT_SERVING", ... for `service` ("" overall).
  absl::StatusOr<std::string> Health(const std::string& service = "");

  absl::StatusOr<v1::ListModelsResponse> ListModels();
  absl::StatusOr<v1::ModelInfo> GetModel(const std::string& name);
  absl::StatusOr<v1::ModelInfo> LoadModel(const std::string& name);
  absl::StatusOr<v1::ModelInfo> UnloadModel(const std::string& name);

  absl::StatusOr<v1::SpectrumResponse> Spectrum(const v1::SpectrumRequest& request);
  absl::StatusOr<v1::SampleResponse> Sample(const v1::SampleRequest& request);
  // The samples of `request`, one response per seed (that seed and its
  // [1, *sample_shape] sample, in the order of request.seeds()) passed to
  // `on_sample` as the server finishes them. No deadline: a long run streams
  // for as long as it takes, so `timeout` does not apply. A non-OK status
  // from `on_sample` cancels the call and is returned. `interrupted` as for
  // WatchAudit.
  absl::Status StreamSamples(
      const v1::SampleRequest& request,
      const std::function<absl::Status(const v1::SampleResponse&)>& on_sample,
      const std::function<bool()>& interrupted = {});
  absl::StatusOr<v1::EarlyMetricsResponse> EarlyMetrics(const v1::EarlyMetricsRequest& request);

  absl::StatusOr<v1::CalibrationResponse> Calibrate(const v1::CalibrationRequest& request);
  absl::StatusOr<v1::AuditJob> SubmitAudit(const v1::AuditRequest& request);
  absl::StatusOr<v1::AuditJob> GetAudit(const std::string& id);
  absl::StatusOr<v1::ListAuditsResponse> ListAudits();
  absl::StatusOr<v1::AuditJob> CancelAudit(const std::string& id);

  // Streams the job's events to `on_event` until the job ends; returns the
  // final job. No deadline. `interrupted` (optional) is polled every 100 ms;
  // when it returns true the stream is cancelled and CANCELLED is returned
  // (the job itself keeps running: cancel it with CancelAudit).
  absl::StatusOr<v1::AuditJob> WatchAudit(
      const std::string& id, const std::function<void(const v1::AuditEvent&)>& on_event,
      const std::function<bool()>& interrupted = {});

 private:
  void Prepare(grpc::ClientContext* context) const;
  template <typename Stub, typename Request, typename Response>
  absl::StatusOr<Response> Unary(Stub* stub,
                                 grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                                              Response*),
                                 const Request& request) const {
    grpc::ClientContext context;
    Prepare(&context);
    Response response;
    grpc::Status status = (stub->*method)(&context, request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    return response;
  }

  std::shared_ptr<grpc::Channel> channel_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
  std::unique_ptr<v1::ModelService::Stub> models_;
  std::unique_ptr<v1::AuditService::Stub> audits_;
};

}  // namespace memaudit::client

#endif  // MEMAUDIT_CLIENT_CLIENT_H_
