// memaudit-server assembled: model registry, job manager, request pool,
// gRPC services with health and reflection, and the metrics endpoint.
#ifndef MEMAUDIT_SERVER_SERVER_H_
#define MEMAUDIT_SERVER_SERVER_H_

#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/runtime/host_allocator.h"
#include "server/access_control.h"
#include "server/job_manager.h"
#include "server/metrics.h"
#include "server/model_registry.h"
#include "server/services.h"
#include "server/worker_pool.h"

namespace memaudit::server {

struct ServerOptions {
  std::string model_repository = "models";
  std::string listen = "127.0.0.1:8500";          // port 0: pick a free one
  std::string metrics_listen = "127.0.0.1:9090";  // port 0: pick a free one
  std::string device = "cpu";
  // Networks' compute precision for models whose config.pbtxt sets no
  // dtype: "" (as saved), float32, float64, bfloat16 or float16.
  std::string dtype;
  int max_concurrent_jobs = 2;
  int max_queued_jobs = 16;
  int max_concurrent_requests = 2;  // unary Spectrum/Sample/Load work
  int max_queued_requests = 32;
  int max_watch_streams = 64;          // WatchAudit streams open at once
  int max_finished_jobs = 1000;        // finished jobs kept for GetAudit
  int64_t max_finished_job_mib = 256;  // and their total size
  // and their age (zero: no age limit)
  absl::Duration max_finished_job_age = absl::ZeroDuration();
  // Durable jobs (job_store.h): "" keeps jobs in memory only, lost on exit.
  std::string state_dir;
  int64_t max_dense_dimension = kDefaultMaxDenseDimension;
  // Per-request memory estimate limit, MiB; 0: DefaultRequestMemoryLimitBytes.
  int64_t max_request_memory_mib = 0;
  absl::Duration shutdown_grace = absl::Seconds(30);
  // A model load (with its probe) that takes longer fails and is abandoned.
  absl::Duration model_load_timeout = ModelRegistry::kDefaultLoadTimeout;

  // TLS (PEM files). With tls_cert and tls_key the gRPC port accepts TLS
  // only; with tls_client_ca too, clients must present a certificate signed
  // by that CA (mTLS).
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  // Bearer tokens with roles (access_control.h); empty: an open server.
  std::string token_file;
  bool metrics_tls = false;            // /metrics over HTTPS with tls_cert/tls_key
  bool metrics_require_token = false;  // /metrics needs a token of token_file (any role)
  // Serve training items (ModelService.GetTrainingItems) to the reviewer
  // and admin roles. Off: training data never leave the server.
  bool serve_training_items = false;
};

class MemauditServer {
 public:
  // Binds both ports (an error if either is taken) and starts serving.
  // Models load in the background; health is NOT_SERVING until the first
  // pass over the repository has ended (each load bounded by
  // model_load_timeout). Each model also has a health entry of its own,
  // "model/<name>": SERVING while it can be used.
  static absl::StatusOr<std::unique_ptr<MemauditServer>> Start(const ServerOptions& options);
  ~MemauditServer();

  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  // Blocks until the initial model load pass has finished.
  void WaitForInitialLoad();

  // Re-reads the token file (SIGHUP). On an error the tokens in force stay
  // and the error is returned; FAILED_PRECONDITION without --token_file.
  // Returns the number of tokens now in force.
  absl::StatusOr<int> ReloadTokens();

  // Graceful stop: health NOT_SERVING, no new work, running audits get
  // `grace` to finish and are then cancelled, then the listeners close.
  void Shutdown(absl::Duration grace);

 private:
  MemauditServer() = default;
  void SetServing(bool serving);
  void SetModelServing(const std::string& model, bool serving);

  ServerOptions options_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<TokenStore> tokens_;  // null: an open server
  std::unique_ptr<AccessControl> access_;
  std::unique_ptr<ModelRegistry> registry_;
  std::unique_ptr<WorkerPool> request_pool_;
  std::unique_ptr<WorkerPool> planning_pool_;  // AuditServiceImpl's planning
  std::unique_ptr<JobStore> store_;            // outlives jobs_
  std::unique_ptr<JobManager> jobs_;
  std::unique_ptr<ModelServiceImpl> model_service_;
  std::unique_ptr<AuditServiceImpl> audit_service_;
  std::unique_ptr<grpc::Server> server_;
  // Returns the heap's free memory to the kernel 2-3 s after the last task
  // or model load.
  std::unique_ptr<HostMemoryReleaser> host_memory_releaser_;
  std::atomic<grpc::HealthCheckServiceInterface*> health_{nullptr};  // once serving
  std::atomic<bool> serving_{false};                                 // what the overall health says
  std::thread loader_;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
  bool shut_down_ = false;
};

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_SERVER_H_
