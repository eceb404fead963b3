// memaudit-server: the gRPC memorization-audit service.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>

#include "core/runtime/host_allocator.h"
#include "core/runtime/torch_runtime.h"
#include "google/protobuf/stubs/logging.h"
#include "server/server.h"

namespace {

// libprotobuf logs an ERROR line for every request whose string field is not
// valid UTF-8 (gRPC then refuses the call): one client could fill the log.
// Its lines pass at most once per 10 s, with the count of those left out.
void RateLimitedProtobufLog(google::protobuf::LogLevel level, const char* filename, int line,
                            const std::string& message) {
  static std::mutex mu;
  static std::chrono::steady_clock::time_point last_printed;
  static int64_t left_out = 0;
  static constexpr const char* kLevels[] = {"INFO", "WARNING", "ERROR", "FATAL"};
  std::lock_guard<std::mutex> lock(mu);
  const auto now = std::chrono::steady_clock::now();
  if (level != google::protobuf::LOGLEVEL_FATAL && last_printed.time_since_epoch().count() != 0 &&
      now - last_printed < std::chrono::seconds(10)) {
    ++left_out;
    return;
  }
  std::string note;
  if (left_out > 0) note = " (" + std::to_string(left_out) + " libprotobuf lines left out before)";
  std::fprintf(stderr, "[libprotobuf %s %s:%d] %s%s\n", kLevels[level], filename, line,
               message.c_str(), note.c_str());
  last_printed = now;
  left_out = 0;
}

}  // namespace

int main(int argc, char** argv) {
  memaudit::server::ServerOptions options;
  int threads = 0;
  double grace_seconds = 30;
  double watchdog_seconds = 15;
  double finished_job_age_hours = 0;
  double load_timeout_seconds = absl::ToDoubleSeconds(options.model_load_timeout);
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
  app.add_option("--dtype", options.dtype,
                 "networks' precision for models whose config sets none: float32, float64, "
                 "bfloat16 or float16 (default: as saved; with a half-precision network the engine "
                 "stays float32)");
  app.add_option("--threads", threads, "LibTorch intra-op threads (0: all cores)")
      ->capture_default_str()
      ->check(CLI::Range(0, 4096));
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
  app.add_option("--max_finished_job_age_hours", finished_job_age_hours,
                 "finished audits older than this are evicted, from memory and --state_dir "
                 "(0: no age limit)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e6));
  app.add_option("--state_dir", options.state_dir,
                 "durable jobs: keep every audit's request, progress and finished samples in "
                 "an SQLite store in this directory, serve them after a restart and resume "
                 "interrupted audits (one server per directory; unset: jobs live in memory "
                 "only and a restart loses them)");
  app.add_option("--max_request_memory_mib", options.max_request_memory_mib,
                 "refuse a request whose memory estimate (states, Jacobians, batches) is larger "
                 "(0: half of the machine's or the container's memory)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  app.add_option("--max_dense_dimension", options.max_dense_dimension,
                 "largest d for a dense spectrum")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_option("--model_load_timeout_seconds", load_timeout_seconds,
                 "a model load (with its probe forward) taking longer fails; its thread is "
                 "abandoned")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 86400.0));
  app.add_option("--shutdown_grace_seconds", grace_seconds,
                 "on SIGTERM, time running audits get before they are cancelled")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 86400.0));
  app.add_option("--tls_cert", options.tls_cert,
                 "PEM certificate chain: the gRPC port accepts TLS only (with --tls_key)");
  app.add_option("--tls_key", options.tls_key, "PEM private key of --tls_cert");
  app.add_option("--tls_client_ca", options.tls_client_ca,
                 "PEM CA bundle: clients must present a certificate it signed (mTLS)");
  app.add_option(
      "--token_file", options.token_file,
      "bearer tokens with roles, \"<name> <audit|reviewer|admin> sha256:<hex>\" per line "
      "(re-read on SIGHUP); unset: no token checks");
  app.add_flag("--metrics_tls", options.metrics_tls,
               "serve /metrics over HTTPS with --tls_cert/--tls_key");
  app.add_flag("--metrics_require_token", options.metrics_require_token,
               "/metrics needs a bearer token from --token_file (any role)");
  app.add_flag("--serve_training_items", options.serve_training_items,
               "serve reference-set items (training data) to the reviewer and admin roles "
               "(GetTrainingItems, for reports that show a copy beside what it copies); "
               "off: training data never leave the server");
  app.add_option("--shutdown_watchdog_seconds", watchdog_seconds,
                 "after SIGTERM, exit anyway when shutdown has not finished this long after "
                 "the grace period (a model call that never returns)")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 3600.0));
  app.add_option("--port_file", port_file,
                 "write \"<grpc port> <metrics port>\" here once listening");
  // A bad flag is a usage error: exit 2, as the CLI's (CLI11's own codes,
  // 101-115, would read as crashes to a supervisor).
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  options.shutdown_grace = absl::Seconds(grace_seconds);
  options.model_load_timeout = absl::Seconds(load_timeout_seconds);
  options.max_finished_job_age = absl::Hours(finished_job_age_hours);

  // Block the signals in every thread; the main thread waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A file-size limit (ulimit -f) must fail the write (the job store reports
  // it and the job fails), not kill the server.
  signal(SIGXFSZ, SIG_IGN);

  google::protobuf::SetLogHandler(RateLimitedProtobufLog);
  memaudit::ConfigureTorchRuntime(threads);
  if (!memaudit::ConfigureHostAllocator()) {
    std::fprintf(stderr,
                 "memaudit-server: malloc left as it is: GLIBC_TUNABLES sets a malloc tunable, "
                 "or this malloc is not glibc's (docs/SERVICE.md, \"Memory limits\")\n");
  }
  auto server = memaudit::server::MemauditServer::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "memaudit-server: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  std::fprintf(stderr,
               "memaudit-server: gRPC on port %d (%s%s), metrics on port %d, repository %s%s\n",
               (*server)->grpc_port(), options.tls_cert.empty() ? "plaintext" : "TLS",
               options.tls_client_ca.empty() ? "" : ", client certificates required",
               (*server)->metrics_port(), options.model_repository.c_str(),
               options.token_file.empty() ? ", no token checks" : ", tokens required");
  if (!port_file.empty()) {
    const std::string temporary = port_file + ".tmp";
    std::ofstream(temporary) << (*server)->grpc_port() << " " << (*server)->metrics_port() << "\n";
    std::rename(temporary.c_str(), port_file.c_str());
  }
  int signal_number = 0;
  while (true) {
    sigwait(&signals, &signal_number);
    if (signal_number != SIGHUP) break;
    absl::StatusOr<int> tokens = (*server)->ReloadTokens();
    if (tokens.ok()) {
      std::fprintf(stderr, "memaudit-server: SIGHUP: %d token(s) in force\n", *tokens);
    } else {
      std::fprintf(stderr, "memaudit-server: SIGHUP: tokens not reloaded, the old ones stay: %s\n",
                   std::string(tokens.status().message()).c_str());
    }
  }
  std::fprintf(stderr, "memaudit-server: signal %d, shutting down (grace %.0f s)\n", signal_number,
               grace_seconds);
  // A LibTorch call cannot be interrupted: if one never returns, shutdown
  // would wait forever. The watchdog ends the process regardless, and a
  // second SIGTERM/SIGINT ends it at once.
  std::thread([&signals] {
    int again = 0;
    do {
      sigwait(&signals, &again);
    } while (again == SIGHUP);
    std::fprintf(stderr, "memaudit-server: second signal %d, exiting now\n", again);
    std::_Exit(2);
  }).detach();
  std::thread([limit = grace_seconds + watchdog_seconds] {
    std::this_thread::sleep_for(std::chrono::duration<double>(limit));
    std::fprintf(stderr,
                 "memaudit-server: shutdown has not finished %.0f s after the signal (a model "
                 "call that does not return?); exiting\n",
                 limit);
    std::_Exit(3);
  }).detach();
  (*server)->Shutdown(options.shutdown_grace);
  std::fprintf(stderr, "memaudit-server: stopped\n");
  // No static destructors: an abandoned model load may still be running
  // LibTorch code on a thread of its own.
  std::fflush(nullptr);
  std::_Exit(0);
}
