// Benchmark: the same audit in-process (RunAudit on a registry-loaded model)
// and through gRPC (memaudit-server in this process on loopback, driven by
// the client library: SubmitAudit + WatchAudit). Reports median wall times
// and their ratio, measured in the same run.
//
//   build/bench/memaudit-bench-audit-overhead --repository models --model toy8d
//       --samples 400 --repeats 7
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "client/client.h"
#include "core/runtime/torch_runtime.h"
#include "server/audit_runner.h"
#include "server/model_registry.h"
#include "server/server.h"

namespace {

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string repository = "models", model = "toy8d";
  int64_t samples = 400;
  int repeats = 7, threads = 0;
  CLI::App app{"in-process vs gRPC audit time"};
  app.add_option("--repository", repository)->capture_default_str();
  app.add_option("--model", model)->capture_default_str();
  app.add_option("--samples", samples)->capture_default_str();
  app.add_option("--repeats", repeats)->capture_default_str();
  app.add_option("--threads", threads)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  memaudit::ConfigureTorchRuntime(threads);

  memaudit::v1::AuditRequest request;
  request.set_model(model);
  request.set_samples_per_condition(samples);

  memaudit::server::ModelRegistry registry(repository, {});
  if (auto info = registry.Load(model); !info.ok()) {
    std::fprintf(stderr, "%s\n", std::string(info.status().message()).c_str());
    return 1;
  }
  auto loaded = registry.Get(model);
  memaudit::server::ServerOptions options;
  options.model_repository = repository;
  options.listen = "127.0.0.1:0";
  options.metrics_listen = "127.0.0.1:0";
  auto server = memaudit::server::MemauditServer::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  (*server)->WaitForInitialLoad();
  memaudit::client::Client client("127.0.0.1:" + std::to_string((*server)->grpc_port()),
                                  std::chrono::seconds(600));

  std::vector<double> in_process, over_grpc;
  for (int r = 0; r < repeats + 1; ++r) {  // the first round warms up
    auto start = std::chrono::steady_clock::now();
    auto plan = memaudit::server::PlanAudit(request, *loaded);
    if (!plan.ok()) return 1;
    auto report = memaudit::server::RunAudit(*plan, {});
    const double local = Seconds(start);
    if (!report.ok()) return 1;
    start = std::chrono::steady_clock::now();
    auto job = client.SubmitAudit(request);
    if (!job.ok()) return 1;
    auto done = client.WatchAudit(job->id(), {});
    const double remote = Seconds(start);
    if (!done.ok() || done->state() != memaudit::v1::JOB_SUCCEEDED) return 1;
    if (r > 0) {
      in_process.push_back(local);
      over_grpc.push_back(remote);
    }
  }
  const double local = Median(in_process), remote = Median(over_grpc);
  std::printf("model %s, %lld samples, %d repeats (median)\n", model.c_str(),
              static_cast<long long>(samples), repeats);
  std::printf("in-process RunAudit : %.4f s\n", local);
  std::printf("gRPC submit + watch : %.4f s\n", remote);
  std::printf("gRPC / in-process   : %.3f (overhead %+.1f%%)\n", remote / local,
              100.0 * (remote / local - 1.0));
  (*server)->Shutdown(absl::ZeroDuration());
  return 0;
}
