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
#include <vector>

#include "absl/status/statusor.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "memaudit/v1/audit_service.grpc.pb.h"
#include "memaudit/v1/model_service.grpc.pb.h"

namespace memaudit::client {

absl::Status FromGrpcStatus(const grpc::Status& status);

// INVALID_ARGUMENT naming the first string field of `message` (as a path,
// e.g. "conditions[2].prompt") that is not valid UTF-8. The server's parser
// refuses such a request before any memaudit code sees it, with an empty
// INTERNAL error; the client checks first so that the user learns which
// field. Every call of Client runs it on its request.
absl::Status CheckStringsAreUtf8(const google::protobuf::Message& message);

// How the client proves who it is and checks whom it talks to.
struct ChannelSecurity {
  bool tls = false;         // TLS instead of plaintext
  std::string ca_pem;       // roots that sign the server's certificate ("" : system roots)
  std::string cert_pem;     // client certificate chain for mTLS ("" : none)
  std::string key_pem;      // its private key
  std::string server_name;  // name to check the certificate against ("" : the target's host)
  std::string token;        // bearer token sent with every call ("" : none)

  // From files (each "" to leave it unset): any TLS file turns TLS on.
  // INVALID_ARGUMENT naming the flag for a file that cannot be read, a
  // certificate without its key, or an empty token file. The token file's
  // first line is the token (surrounding whitespace removed).
  static absl::StatusOr<ChannelSecurity> FromFiles(const std::string& ca_path,
                                                   const std::string& cert_path,
                                                   const std::string& key_path,
                                                   const std::string& token_path);
};

class Client {
 public:
  // How often an open call pings a server that sends nothing, and how long
  // the answer may take: a server that does not answer (frozen, or cut off
  // by a partition: TCP alone would wait for ever) ends the call with
  // UNAVAILABLE within about twice this. memaudit-server accepts pings
  // every 500 ms or slower.
  static constexpr std::chrono::milliseconds kDefaultKeepalive{20000};

  // `target` is HOST:PORT (or any gRPC target name). `timeout` bounds every
  // unary call (0: none); `keepalive` as above (0: no pings).
  Client(const std::string& target, std::chrono::milliseconds timeout,
         const ChannelSecurity& security = {},
         std::chrono::milliseconds keepalive = kDefaultKeepalive);

  // grpc.health.v1: "SERVING", "NOT_SERVING", ... for `service` ("" overall).
  absl::StatusOr<std::string> Health(const std::string& service = "");
  // Returns once `service` ("" overall) is SERVING — the server turns so
  // when its first model load pass is over — waiting at most `timeout`,
  // also for a server that is not listening yet. Uses grpc.health.v1's
  // Watch stream, so it wakes on the change rather than polling.
  // DEADLINE_EXCEEDED (naming the last status seen) when the time runs out;
  // the Watch's own error otherwise (e.g. UNAUTHENTICATED).
  absl::Status WaitUntilServing(std::chrono::milliseconds timeout, const std::string& service = "");

  absl::StatusOr<v1::ListModelsResponse> ListModels();
  absl::StatusOr<v1::ModelInfo> GetModel(const std::string& name);
  absl::StatusOr<v1::ModelInfo> LoadModel(const std::string& name);
  absl::StatusOr<v1::ModelInfo> UnloadModel(const std::string& name);
  // Reference-set items by index (the reviewer role, on a server that
  // serves them: --serve_training_items).
  absl::StatusOr<v1::GetTrainingItemsResponse> GetTrainingItems(
      const std::string& model, const std::vector<int64_t>& indices);

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
  // The guard's result for each seed of `request`, in seed order, passed to
  // `on_seed` as the server finishes them; no deadline, cancellation and
  // errors as for StreamSamples.
  absl::Status Mitigate(const v1::MitigateRequest& request,
                        const std::function<absl::Status(const v1::MitigatedSample&)>& on_seed,
                        const std::function<bool()>& interrupted = {});

  absl::StatusOr<v1::CalibrationResponse> Calibrate(const v1::CalibrationRequest& request);
  absl::StatusOr<v1::AuditJob> SubmitAudit(const v1::AuditRequest& request);
  absl::StatusOr<v1::AuditJob> GetAudit(const std::string& id);
  // One page (ListAuditsRequest.page_size / page_token).
  absl::StatusOr<v1::ListAuditsResponse> ListAudits(const v1::ListAuditsRequest& request = {});
  absl::StatusOr<v1::AuditJob> CancelAudit(const std::string& id);
  // The same within `timeout` instead of the client's: a best-effort cancel
  // that must not hold its caller on a frozen server.
  absl::StatusOr<v1::AuditJob> CancelAudit(const std::string& id,
                                           std::chrono::milliseconds timeout);

  // Streams the job's events to `on_event` until the job ends; returns the
  // final job. No deadline. `interrupted` (optional) is polled every 100 ms;
  // when it returns true the stream is cancelled and CANCELLED is returned
  // (the job itself keeps running: cancel it with CancelAudit).
  absl::StatusOr<v1::AuditJob> WatchAudit(
      const std::string& id, const std::function<void(const v1::AuditEvent&)>& on_event,
      const std::function<bool()>& interrupted = {});

 private:
  // The token, and the --timeout deadline when `deadline`.
  void Prepare(grpc::ClientContext* context, bool deadline = true) const;
  // `timeout`: the call's deadline instead of the client's.
  template <typename Stub, typename Request, typename Response>
  absl::StatusOr<Response> Unary(
      Stub* stub, grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Response*),
      const Request& request, std::optional<std::chrono::milliseconds> timeout = {}) const {
    if (absl::Status valid = CheckStringsAreUtf8(request); !valid.ok()) return valid;
    grpc::ClientContext context;
    Prepare(&context, /*deadline=*/!timeout.has_value());
    if (timeout) context.set_deadline(std::chrono::system_clock::now() + *timeout);
    Response response;
    grpc::Status status = (stub->*method)(&context, request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    return response;
  }

  std::shared_ptr<grpc::Channel> channel_;
  std::chrono::milliseconds timeout_;
  std::string authorization_;  // "Bearer <token>", or empty
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
  std::unique_ptr<v1::ModelService::Stub> models_;
  std::unique_ptr<v1::AuditService::Stub> audits_;
};

}  // namespace memaudit::client

#endif  // MEMAUDIT_CLIENT_CLIENT_H_
