#include "server/metrics.h"

// Eigen/LibTorch headers must come before httplib (<resolv.h> defines _res).
#include <ATen/ATen.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <torch/version.h>
#include <unistd.h>

#include <httplib.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/checkpoint/load_model.h"
#include "core/device/device_memory.h"
#include "core/spectra/spectrum.h"
#include "google/protobuf/descriptor.h"
#include "memaudit/v1/audit_service.pb.h"
#include "memaudit/v1/model_service.pb.h"

namespace memaudit::server {
namespace {

// Threads serving /metrics (each holds one connection at a time).
constexpr size_t kHttpWorkers = 128;

const prometheus::Histogram::BucketBoundaries kRpcBuckets = {
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};
const prometheus::Histogram::BucketBoundaries kSpectrumBuckets = {
    0.0001, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120};

// Fields of /proc/self/stat after the command name.
std::vector<std::string> ProcStatFields() {
  std::ifstream in("/proc/self/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return {};
  return absl::StrSplit(text.substr(close + 2), ' ', absl::SkipEmpty());
}

double ProcessStartTime() {
  const std::vector<std::string> fields = ProcStatFields();
  double boot_time = 0;
  std::ifstream in("/proc/stat");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("btime ", 0) == 0) (void)absl::SimpleAtod(line.substr(6), &boot_time);
  }
  double start_ticks = 0;
  if (fields.size() > 19) (void)absl::SimpleAtod(fields[19], &start_ticks);
  return boot_time + start_ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

}  // namespace

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      rpc_duration_(prometheus::BuildHistogram()
                        .Name("memaudit_rpc_duration_seconds")
                        .Help("gRPC handling time by method and status code")
                        .Register(*registry_)),
      audits_(prometheus::BuildCounter()
                  .Name("memaudit_audits_total")
                  .Help("Audits finished, by model and overall verdict")
                  .Register(*registry_)),
      sample_verdicts_(prometheus::BuildCounter()
                           .Name("memaudit_audit_samples_total")
                           .Help("Audited samples, by model and verdict")
                           .Register(*registry_)),
      jobs_finished_(prometheus::BuildCounter()
                         .Name("memaudit_jobs_finished_total")
                         .Help("Audit jobs that ended, by final state")
                         .Register(*registry_)),
      jobs_(prometheus::BuildGauge()
                .Name("memaudit_jobs")
                .Help("Audit jobs by state (queued, running)")
                .Register(*registry_)),
      finished_jobs_(prometheus::BuildGauge()
                         .Name("memaudit_finished_jobs")
                         .Help("Finished jobs kept in memory for GetAudit and ListAudits")
                         .Register(*registry_)),
      finished_job_bytes_(prometheus::BuildGauge()
                              .Name("memaudit_finished_jobs_bytes")
                              .Help("Serialized size of the finished jobs kept in memory")
                              .Register(*registry_)),
      stored_jobs_(prometheus::BuildGauge()
                       .Name("memaudit_job_store_jobs")
                       .Help("Jobs held in the durable job store (--state_dir)")
                       .Register(*registry_)),
      store_bytes_(prometheus::BuildGauge()
                       .Name("memaudit_job_store_bytes")
                       .Help("Bytes on disk of the durable job store (database and its log)")
                       .Register(*registry_)),
      jobs_evicted_(prometheus::BuildCounter()
                        .Name("memaudit_jobs_evicted_total")
                        .Help("Finished jobs dropped from memory by the count or size cap")
                        .Register(*registry_)),
      network_evaluations_(prometheus::BuildCounter()
                               .Name("memaudit_network_evaluations_total")
                               .Help("Rows evaluated by diffusion networks, by kind")
                               .Register(*registry_)),
      spectrum_duration_(prometheus::BuildHistogram()
                             .Name("memaudit_spectrum_duration_seconds")
                             .Help("Time per curvature spectrum (Jacobian + eigen-solve)")
                             .Register(*registry_)),
      model_load_seconds_(prometheus::BuildGauge()
                              .Name("memaudit_model_load_duration_seconds")
                              .Help("Duration of the last load attempt, by model")
                              .Register(*registry_)),
      model_loads_(prometheus::BuildCounter()
                       .Name("memaudit_model_loads_total")
                       .Help("Model load attempts, by model and result")
                       .Register(*registry_)),
      model_ready_(prometheus::BuildGauge()
                       .Name("memaudit_model_ready")
                       .Help("1 when the model is loaded and serving")
                       .Register(*registry_)),
      device_memory_(
          prometheus::BuildGauge()
              .Name("memaudit_device_memory_bytes")
              .Help("Memory on the compute device by kind: cpu resident; cuda allocated, "
                    "reserved (caching allocator) and peak allocated")
              .Register(*registry_)),
      build_info_(prometheus::BuildGauge()
                      .Name("memaudit_build_info")
                      .Help("Build information; always 1")
                      .Register(*registry_)),
      process_cpu_(prometheus::BuildCounter()
                       .Name("process_cpu_seconds_total")
                       .Help("Total user and system CPU time spent in seconds")
                       .Register(*registry_)),
      process_memory_(prometheus::BuildGauge()
                          .Name("process_resident_memory_bytes")
                          .Help("Resident memory size in bytes")
                          .Register(*registry_)),
      process_start_(prometheus::BuildGauge()
                         .Name("process_start_time_seconds")
                         .Help("Start time of the process since unix epoch in seconds")
                         .Register(*registry_)),
      process_fds_(prometheus::BuildGauge()
                       .Name("process_open_fds")
                       .Help("Number of open file descriptors")
                       .Register(*registry_)),
      process_threads_(prometheus::BuildGauge()
                           .Name("process_threads")
                           .Help("Number of OS threads in the process")
                           .Register(*registry_)) {
  build_info_
      .Add({{"version", MEMAUDIT_VERSION},
            {"torch_version", TORCH_VERSION},
            {"cuda", at::hasCUDA() ? "true" : "false"}})
      .Set(1);
  process_start_.Add({}).Set(ProcessStartTime());
  jobs_.Add({{"state", "queued"}});
  jobs_.Add({{"state", "running"}});
  finished_jobs_.Add({});
  finished_job_bytes_.Add({});
  jobs_evicted_.Add({});
  network_evaluations_.Add({{"kind", "sampling"}});
  network_evaluations_.Add({{"kind", "curvature"}});
  // Every series whose labels are known now, at zero (see RegisterModel).
  for (const char* service : {"memaudit.v1.ModelService", "memaudit.v1.AuditService"}) {
    const google::protobuf::ServiceDescriptor* descriptor =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(service);
    for (int i = 0; descriptor != nullptr && i < descriptor->method_count(); ++i) {
      rpc_duration_.Add(
          {{"method", absl::StrCat(descriptor->name(), "/", descriptor->method(i)->name())},
           {"code", "OK"}},
          kRpcBuckets);
    }
  }
  for (const v1::JobState state : {v1::JOB_SUCCEEDED, v1::JOB_FAILED, v1::JOB_CANCELLED}) {
    jobs_finished_.Add({{"state", v1::JobState_Name(state)}});
  }
  for (const SpectrumMethod method : {SpectrumMethod::kDense, SpectrumMethod::kArnoldi}) {
    spectrum_duration_.Add({{"method", SpectrumMethodName(method)}}, kSpectrumBuckets);
  }
}

void Metrics::RegisterModel(const std::string& model) {
  for (const v1::Verdict verdict : {v1::NOT_MEMORIZED, v1::PARTIAL, v1::MEMORIZED}) {
    audits_.Add({{"model", model}, {"verdict", v1::Verdict_Name(verdict)}});
    sample_verdicts_.Add({{"model", model}, {"verdict", v1::Verdict_Name(verdict)}});
  }
  for (const char* result : {"ok", "error"}) {
    model_loads_.Add({{"model", model}, {"result", result}});
  }
  model_ready_.Add({{"model", model}});
}

Metrics::~Metrics() { StopServing(); }

void Metrics::ObserveRpc(const std::string& method, const std::string& code, double seconds) {
  rpc_duration_.Add({{"method", method}, {"code", code}}, kRpcBuckets).Observe(seconds);
}

void Metrics::CountAudit(const std::string& model, const std::string& verdict) {
  audits_.Add({{"model", model}, {"verdict", verdict}}).Increment();
}

void Metrics::CountSampleVerdict(const std::string& model, const std::string& verdict) {
  sample_verdicts_.Add({{"model", model}, {"verdict", verdict}}).Increment();
}

void Metrics::CountJobFinished(const std::string& state) {
  jobs_finished_.Add({{"state", state}}).Increment();
}

void Metrics::CountJobsEvicted(int64_t jobs) {
  jobs_evicted_.Add({}).Increment(static_cast<double>(jobs));
}

void Metrics::CountNetworkEvaluations(const std::string& kind, int64_t rows) {
  network_evaluations_.Add({{"kind", kind}}).Increment(static_cast<double>(rows));
}

void Metrics::ObserveSpectrum(const std::string& method, double seconds) {
  spectrum_duration_.Add({{"method", method}}, kSpectrumBuckets).Observe(seconds);
}

void Metrics::ObserveModelLoad(const std::string& model, bool ok, double seconds) {
  model_load_seconds_.Add({{"model", model}}).Set(seconds);
  model_loads_.Add({{"model", model}, {"result", ok ? "ok" : "error"}}).Increment();
}

void Metrics::SetModelReady(const std::string& model, bool ready) {
  model_ready_.Add({{"model", model}}).Set(ready ? 1 : 0);
}

void Metrics::SetJobGauges(std::function<JobGauges()> gauges) {
  std::lock_guard<std::mutex> lock(scrape_mu_);
  job_gauges_ = std::move(gauges);
}

void Metrics::SetDevice(const std::string& device) {
  absl::StatusOr<torch::Device> parsed = ParseDevice(device);
  device_ = parsed.ok() && parsed->is_cuda() ? parsed->str() : "cpu";
}

void Metrics::UpdateScrapeTimeGauges() {
  if (job_gauges_) {
    const JobGauges gauges = job_gauges_();
    jobs_.Add({{"state", "queued"}}).Set(static_cast<double>(gauges.queued));
    jobs_.Add({{"state", "running"}}).Set(static_cast<double>(gauges.running));
    finished_jobs_.Add({}).Set(static_cast<double>(gauges.finished));
    finished_job_bytes_.Add({}).Set(static_cast<double>(gauges.finished_bytes));
    if (gauges.stored_jobs >= 0) {
      stored_jobs_.Add({}).Set(static_cast<double>(gauges.stored_jobs));
      store_bytes_.Add({}).Set(static_cast<double>(gauges.store_bytes));
    }
  }
  const std::vector<std::string> fields = ProcStatFields();
  if (fields.size() > 21) {
    double user = 0, system = 0, threads = 0, rss_pages = 0;
    (void)absl::SimpleAtod(fields[11], &user);
    (void)absl::SimpleAtod(fields[12], &system);
    (void)absl::SimpleAtod(fields[17], &threads);
    (void)absl::SimpleAtod(fields[21], &rss_pages);
    const double cpu = (user + system) / static_cast<double>(sysconf(_SC_CLK_TCK));
    if (cpu > last_cpu_seconds_) {
      process_cpu_.Add({}).Increment(cpu - last_cpu_seconds_);
      last_cpu_seconds_ = cpu;
    }
    const double rss = rss_pages * static_cast<double>(sysconf(_SC_PAGESIZE));
    process_memory_.Add({}).Set(rss);
    process_threads_.Add({}).Set(threads);
    if (device_ == "cpu") device_memory_.Add({{"device", "cpu"}, {"kind", "resident"}}).Set(rss);
  }
  if (device_ != "cpu") {
    absl::StatusOr<torch::Device> device = ParseDevice(device_);
    absl::StatusOr<CudaMemory> memory =
        device.ok() ? QueryCudaMemory(*device) : absl::StatusOr<CudaMemory>(device.status());
    if (memory.ok()) {
      const std::string name = device->str();
      device_memory_.Add({{"device", name}, {"kind", "allocated"}})
          .Set(static_cast<double>(memory->allocated));
      device_memory_.Add({{"device", name}, {"kind", "reserved"}})
          .Set(static_cast<double>(memory->reserved));
      device_memory_.Add({{"device", name}, {"kind", "peak"}})
          .Set(static_cast<double>(memory->peak_allocated));
    }
  }
  std::error_code ec;
  int64_t fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++fds;
  }
  process_fds_.Add({}).Set(static_cast<double>(fds));
}

std::string Metrics::Scrape() {
  std::lock_guard<std::mutex> lock(scrape_mu_);
  UpdateScrapeTimeGauges();
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_->Collect());
  return out.str();
}

absl::StatusOr<int> Metrics::Serve(const std::string& listen, const HttpOptions& options) {
  const size_t colon = listen.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics_listen: \"", listen, "\" is not HOST:PORT"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  if (options.tls_cert_path.empty() != options.tls_key_path.empty()) {
    return absl::InvalidArgumentError("metrics TLS needs both a certificate and a key");
  }
  if (!options.tls_cert_path.empty()) {
    auto https = std::make_unique<httplib::SSLServer>(options.tls_cert_path.c_str(),
                                                      options.tls_key_path.c_str());
    if (!https->is_valid()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--metrics_tls: cannot use ", options.tls_cert_path, " and ", options.tls_key_path));
    }
    http_ = std::move(https);
  } else {
    http_ = std::make_unique<httplib::Server>();
  }
  http_->set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  // Idle or slow clients hold a worker until a timeout: with enough workers
  // and short timeouts a scrape is answered at once while 100 idle
  // connections are open (tests/integration_test.cc), and each of them is
  // dropped within two seconds.
  http_->new_task_queue = [] { return new httplib::ThreadPool(kHttpWorkers); };
  http_->set_read_timeout(2, 0);
  http_->set_write_timeout(2, 0);
  http_->set_keep_alive_timeout(2);
  http_->set_keep_alive_max_count(16);
  if (options.authorize) {
    // Every path, the index included, needs the token.
    http_->set_pre_routing_handler([authorize = options.authorize](const httplib::Request& request,
                                                                   httplib::Response& response) {
      if (request.path == "/healthz" || request.path == "/readyz" ||
          authorize(request.get_header_value("Authorization"))) {
        return httplib::Server::HandlerResponse::Unhandled;
      }
      response.status = 401;
      response.set_header("WWW-Authenticate", "Bearer realm=\"memaudit metrics\"");
      response.set_content("a bearer token from the server's token file is required\n",
                           "text/plain");
      return httplib::Server::HandlerResponse::Handled;
    });
  }
  http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
    response.set_content(Scrape(), "text/plain; version=0.0.4; charset=utf-8");
  });
  http_->Get("/healthz", [](const httplib::Request&, httplib::Response& response) {
    response.set_content("ok\n", "text/plain");
  });
  http_->Get(
      "/readyz", [ready = options.ready](const httplib::Request&, httplib::Response& response) {
        const bool is_ready = !ready || ready();
        response.status = is_ready ? 200 : 503;
        response.set_content(is_ready ? "ready\n" : "not ready: loading models or shutting down\n",
                             "text/plain");
      });
  http_->Get("/", [](const httplib::Request&, httplib::Response& response) {
    response.set_content("memaudit metrics: see /metrics\n", "text/plain");
  });
  const int bound =
      port == 0 ? http_->bind_to_any_port(host) : (http_->bind_to_port(host, port) ? port : -1);
  if (bound < 0) {
    http_.reset();
    return absl::FailedPreconditionError(
        absl::StrCat("--metrics_listen: cannot bind ", listen, " (in use or not local)"));
  }
  http_thread_ = std::thread([this] { http_->listen_after_bind(); });
  return bound;
}

void Metrics::StopServing() {
  if (http_) http_->stop();
  if (http_thread_.joinable()) http_thread_.join();
  http_.reset();
}

}  // namespace memaudit::server
