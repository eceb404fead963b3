// memaudit-server: the gRPC memorization-audit service.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>

#include "server.h"
#include "torch_runtime.h"

int main(int argc, char** argv) {
  memaudit::server::ServerOptions options;
  int threads = 0;
  double grace_seconds = 30;
  std::string port_file;
  CLI::App app{"memaudit-server: audits diffusion models for memorization over gRPC"};
  app.add_option("--model_repository", options.model_repository,
                 "directory with one subdirectory per model")
      ->capture_default_str();
  app.add_option("--listen", options.listen, "gRPC address HOST:PORT (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--metrics_listen", options.metrics_listen,
                 "Prometheus /metrics address HOST:PORT")
      ->capture_default_str();
  app.add_option("--device", options.device, "cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--threads", threads, "LibTorch intra-op threads (0: all cores)")
      ->capture_default_str();
  app.add_option("--max_concurrent_jobs", options.max_concurrent_jobs, "audits run at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--max_queued_jobs", options.max_queued_jobs,
                 "audits waiting beyond those (more: RESOURCE_EXHAUSTED)")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000));
  app.add_option("--max_concurrent_requests", options.max_concurrent_requests,
                 "unary Spectrum/Sample/LoadModel calls worked on at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--max_queued_requests", options.max_queued_requests,
                 "unary calls waiting beyond those")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000));
  app.add_option("--max_watch_streams", options.max_watch_streams,
                 "WatchAudit streams open at once (more: RESOURCE_EXHAUSTED)")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--max_finished_jobs", options.max_finished_jobs,
                 "finished audits kept in memory for GetAudit/ListAudits (oldest evicted)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--max_finished_job_mib", options.max_finished_job_mib,
                 "total size of the finished audits kept, MiB (oldest evicted)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_option("--max_dense_dimension", options.max_dense_dimension,
                 "largest d for a dense spectrum")
      ->capture_default_str();
  app.add_option("--shutdown_grace_seconds", grace_seconds,
                 "on SIGTERM, time running audits get before they are cancelled")
      ->capture_default_str();
  app.add_option("--port_file", port_file,
                 "write \"<grpc port> <metrics port>\" here once listening");
  CLI11_PARSE(app, argc, argv);
  options.shutdown_grace = absl::Seconds(grace_seconds);

  // Block the stop signals in every thread; the main thread waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  memaudit::ConfigureTorchRuntime(threads);
  auto server = memaudit::server::MemauditServer::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "memaudit-server: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  std::fprintf(stderr, "memaudit-server: gRPC on port %d, metrics on port %d, repository %s\n",
               (*server)->grpc_port(), (*server)->metrics_port(), options.model_repository.c_str());
  if (!port_file.empty()) {
    const std::string temporary = port_file + ".tmp";
    std::ofstream(temporary) << (*server)->grpc_port() << " " << (*server)->metrics_port() << "\n";
    std::rename(temporary.c_str(), port_file.c_str());
  }
  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  std::fprintf(stderr, "memaudit-server: signal %d, shutting down (grace %.0f s)\n", signal_number,
               grace_seconds);
  (*server)->Shutdown(options.shutdown_grace);
  std::fprintf(stderr, "memaudit-server: stopped\n");
  return 0;
}
