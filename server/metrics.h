// The server's Prometheus metrics and their HTTP endpoint (text exposition
// at /metrics on its own port).
//
// prometheus::Exposer (civetweb) cannot run in a process that links LibTorch
// with OpenBLAS (docs/DESIGN.md §6), so the registry is served by cpp-httplib.
// All methods are thread-safe. Label values are bounded: RPC method names,
// status codes, model names from the repository, verdicts, fixed kinds.
#ifndef MEMAUDIT_SERVER_METRICS_H_
#define MEMAUDIT_SERVER_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace memaudit::server {

// The job manager's state, sampled at scrape time.
struct JobGauges {
  int64_t queued = 0;
  int64_t running = 0;
  int64_t finished = 0;        // finished jobs kept for GetAudit / ListAudits
  int64_t finished_bytes = 0;  // their serialized size
  // With a job store (--state_dir): the jobs it holds and its bytes on
  // disk; -1 without one (the gauges are then not exported).
  int64_t stored_jobs = -1;
  int64_t store_bytes = -1;
};

class Metrics {
 public:
  Metrics();
  ~Metrics();

  // RPC latency by method (e.g. "AuditService/Spectrum") and status code
  // name (e.g. "OK", "NOT_FOUND").
  void ObserveRpc(const std::string& method, const std::string& code, double seconds);
  void CountAudit(const std::string& model, const std::string& verdict);
  void CountSampleVerdict(const std::string& model, const std::string& verdict);
  void CountJobFinished(const std::string& state);
  // Finished jobs dropped from memory by the job manager's caps.
  void CountJobsEvicted(int64_t jobs);
  // Rows through the network; kind "sampling" (no gradient) or "curvature".
  void CountNetworkEvaluations(const std::string& kind, int64_t rows);
  // `method`: "dense" or "arnoldi".
  void ObserveSpectrum(const std::string& method, double seconds);
  void ObserveModelLoad(const std::string& model, bool ok, double seconds);
  // Creates `model`'s series at zero (audits and sample verdicts by
  // verdict, loads by result, readiness): a series born at its first
  // increment hides that increment from increase() and rate(). Call for
  // every model in the repository before it is first loaded. The
  // model-independent series (RPCs by method with code OK, jobs finished by
  // state, spectra by method) are created by the constructor.
  void RegisterModel(const std::string& model);
  void SetModelReady(const std::string& model, bool ready);

  // Sampled at scrape time.
  void SetJobGauges(std::function<JobGauges()> gauges);
  // The device the models run on ("cpu", "cuda:0"). On a CUDA device the
  // scrape reports its caching allocator's allocated, reserved and peak
  // bytes (device_memory.h); on the CPU, the resident set. Call before
  // serving.
  void SetDevice(const std::string& device);

  // The exposition text (what GET /metrics returns).
  std::string Scrape();

  // How the endpoint is protected (all optional).
  struct HttpOptions {
    // Both set: HTTPS only, with this PEM certificate chain and key.
    std::string tls_cert_path;
    std::string tls_key_path;
    // Set: a request is answered only when this returns true for its
    // Authorization header ("" when absent); otherwise 401.
    std::function<bool(const std::string& authorization)> authorize;
    // GET /readyz answers 200 when this returns true, 503 otherwise (unset:
    // always 200); GET /healthz answers 200 while the process serves HTTP.
    // Neither needs a token (Kubernetes probes cannot send one, and the
    // native gRPC probe cannot speak TLS).
    std::function<bool()> ready;
  };
  // Serves GET /metrics on `listen` ("host:port"; port 0 picks one) in a
  // background thread. Returns the bound port. FAILED_PRECONDITION if the
  // port is taken (no SO_REUSEPORT: a clash is an error, not a split) or
  // the TLS files cannot be used.
  absl::StatusOr<int> Serve(const std::string& listen, const HttpOptions& options = {});
  void StopServing();

 private:
  void UpdateScrapeTimeGauges();

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Histogram>& rpc_duration_;
  prometheus::Family<prometheus::Counter>& audits_;
  prometheus::Family<prometheus::Counter>& sample_verdicts_;
  prometheus::Family<prometheus::Counter>& jobs_finished_;
  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Family<prometheus::Gauge>& finished_jobs_;
  prometheus::Family<prometheus::Gauge>& finished_job_bytes_;
  prometheus::Family<prometheus::Gauge>& stored_jobs_;
  prometheus::Family<prometheus::Gauge>& store_bytes_;
  prometheus::Family<prometheus::Counter>& jobs_evicted_;
  prometheus::Family<prometheus::Counter>& network_evaluations_;
  prometheus::Family<prometheus::Histogram>& spectrum_duration_;
  prometheus::Family<prometheus::Gauge>& model_load_seconds_;
  prometheus::Family<prometheus::Counter>& model_loads_;
  prometheus::Family<prometheus::Gauge>& model_ready_;
  prometheus::Family<prometheus::Gauge>& device_memory_;
  prometheus::Family<prometheus::Gauge>& build_info_;
  prometheus::Family<prometheus::Counter>& process_cpu_;
  prometheus::Family<prometheus::Gauge>& process_memory_;
  prometheus::Family<prometheus::Gauge>& process_start_;
  prometheus::Family<prometheus::Gauge>& process_fds_;
  prometheus::Family<prometheus::Gauge>& process_threads_;
  std::function<JobGauges()> job_gauges_;
  double last_cpu_seconds_ = 0;
  std::string device_ = "cpu";
  std::mutex scrape_mu_;

  std::unique_ptr<httplib::Server> http_;
  std::thread http_thread_;
};

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_METRICS_H_
