// The client library and the memaudit CLI against an in-process fake
// server (no LibTorch): the streaming calls, the CLI's exit codes, its
// flag checks, and that it prints what report_format renders.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "client/prompt_files.h"
#include "client/report_format.h"

extern char** environ;

namespace memaudit::client {
namespace {

using std::chrono::milliseconds;

// Waits until `done` returns true or `timeout` passes; returns done().
bool WaitFor(const std::function<bool()>& done, milliseconds timeout = milliseconds(10000)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return true;
}

// Blocks until the client cancels the call (or the server shuts down).
grpc::Status UntilCancelled(grpc::ServerContext* context) {
  WaitFor([context] { return context->IsCancelled(); }, milliseconds(60000));
  return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
}

// One sample per seed: [seed, -seed].
v1::Tensor Samples(const std::vector<uint64_t>& seeds) {
  std::vector<float> values;
  for (uint64_t seed : seeds) {
    values.push_back(static_cast<float>(seed));
    values.push_back(-static_cast<float>(seed));
  }
  v1::Tensor tensor;
  tensor.set_dtype(v1::FLOAT32);
  tensor.add_shape(static_cast<int64_t>(seeds.size()));
  tensor.add_shape(2);
  tensor.set_data(values.data(), values.size() * sizeof(float));
  return tensor;
}

// A finished audit of one condition; the verdict follows the job id:
// "audit-memorizing" MEMORIZED, "audit-partial" PARTIAL, else NOT_MEMORIZED.
v1::AuditJob FinishedJob(const std::string& id) {
  const v1::Verdict verdict = id == "audit-memorizing" ? v1::MEMORIZED
                              : id == "audit-partial"  ? v1::PARTIAL
                                                       : v1::NOT_MEMORIZED;
  v1::AuditJob job;
  job.set_id(id);
  job.set_state(v1::JOB_SUCCEEDED);
  job.mutable_request()->set_model(id.substr(6));
  job.mutable_progress()->set_samples_done(2);
  job.mutable_progress()->set_samples_total(2);
  v1::AuditReport& report = *job.mutable_report();
  report.set_model(id.substr(6));
  report.set_verdict(verdict);
  report.set_total_samples(2);
  v1::ConditionReport* condition = report.add_conditions();
  condition->mutable_condition()->set_class_label(1);
  condition->set_label("class 1");
  condition->set_verdict(verdict);
  for (uint64_t seed : {0, 1}) {
    v1::SampleReport* sample = condition->add_samples();
    sample->set_seed(seed);
    sample->set_verdict(verdict);
    sample->mutable_summary()->set_dimension(2);
  }
  report.mutable_policy()->set_rule("noise radius");
  return job;
}

class FakeModels final : public v1::ModelService::Service {
 public:
  static v1::ListModelsResponse List() {
    v1::ListModelsResponse list;
    v1::ModelInfo* toy = list.add_models();
    toy->set_name("toy");
    toy->set_state(v1::MODEL_READY);
    toy->set_device("cpu");
    toy->set_dimension(2);
    toy->mutable_config()->add_sample_shape(2);
    v1::ModelInfo* broken = list.add_models();
    broken->set_name("broken");
    broken->set_state(v1::MODEL_FAILED);
    broken->set_last_error("model.pt: bad archive");
    return list;
  }

  grpc::Status ListModels(grpc::ServerContext*, const v1::ListModelsRequest*,
                          v1::ListModelsResponse* response) override {
    *response = List();
    return grpc::Status::OK;
  }
  // Any name: the toy model under that name (so `sample --model failing`
  // reaches StreamSamples).
  grpc::Status GetModel(grpc::ServerContext*, const v1::GetModelRequest* request,
                        v1::ModelInfo* response) override {
    *response = List().models(0);
    response->set_name(request->name());
    return grpc::Status::OK;
  }
};

class FakeAudits final : public v1::AuditService::Service {
 public:
  // Models: "failing" fails after the first sample, "endless" never sends.
  grpc::Status StreamSamples(grpc::ServerContext* context, const v1::SampleRequest* request,
                             grpc::ServerWriter<v1::SampleResponse>* writer) override {
    Record(*request, &last_sample_);
    ++stream_calls;
    if (request->model() == "endless") return UntilCancelled(context);
    for (uint64_t seed : request->seeds()) {
      v1::SampleResponse response;
      response.add_seeds(seed);
      *response.mutable_samples() = Samples({seed});
      response.mutable_samples()->set_shape(0, 1);
      if (!writer->Write(response)) return grpc::Status(grpc::StatusCode::CANCELLED, "gone");
      if (request->model() == "failing") {
        return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "out of memory");
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status Sample(grpc::ServerContext*, const v1::SampleRequest* request,
                      v1::SampleResponse* response) override {
    Record(*request, &last_sample_);
    if (request->model() == "failing") {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "out of memory");
    }
    *response->mutable_seeds() = request->seeds();
    *response->mutable_samples() =
        Samples(std::vector<uint64_t>(request->seeds().begin(), request->seeds().end()));
    return grpc::Status::OK;
  }

  grpc::Status Spectrum(grpc::ServerContext*, const v1::SpectrumRequest* request,
                        v1::SpectrumResponse* response) override {
    Record(*request, &last_spectrum_);
    response->set_model(request->model());
    response->set_sigma(0.5);
    response->add_eigenvalues_real(-2);
    response->add_eigenvalues_imag(0);
    response->mutable_summary()->set_dimension(1);
    response->set_method(v1::ARNOLDI);
    return grpc::Status::OK;
  }

  grpc::Status SubmitAudit(grpc::ServerContext*, const v1::AuditRequest* request,
                           v1::AuditJob* response) override {
    Record(*request, &last_audit_);
    response->set_id("audit-" + request->model());
    response->set_state(v1::JOB_QUEUED);
    return grpc::Status::OK;
  }

  // Progress as the server sends it, then the finished job; "audit-endless"
  // never finishes.
  grpc::Status WatchAudit(grpc::ServerContext* context, const v1::WatchAuditRequest* request,
                          grpc::ServerWriter<v1::AuditEvent>* writer) override {
    watching = true;
    if (request->id() == "audit-endless") return UntilCancelled(context);
    for (auto [phase, done] :
         std::vector<std::pair<v1::AuditPhase, int>>{{v1::AUDIT_PHASE_QUEUED, 0},
                                                     {v1::AUDIT_PHASE_SAMPLING, 0},
                                                     {v1::AUDIT_PHASE_CURVATURE, 0},
                                                     {v1::AUDIT_PHASE_MEASURED, 2}}) {
      v1::AuditEvent event;
      event.mutable_progress()->set_phase(phase);
      event.mutable_progress()->set_samples_done(done);
      event.mutable_progress()->set_samples_total(2);
      event.mutable_progress()->set_condition("class 1");
      writer->Write(event);
    }
    v1::AuditEvent event;
    *event.mutable_finished() = FinishedJob(request->id());
    writer->Write(event);
    return grpc::Status::OK;
  }

  grpc::Status GetAudit(grpc::ServerContext*, const v1::GetAuditRequest* request,
                        v1::AuditJob* response) override {
    if (request->id() == "audit-missing") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no audit audit-missing");
    }
    if (request->id() == "audit-running") {
      response->set_id(request->id());
      response->set_state(v1::JOB_RUNNING);
      response->mutable_progress()->set_samples_done(1);
      response->mutable_progress()->set_samples_total(4);
      return grpc::Status::OK;
    }
    *response = FinishedJob(request->id());
    return grpc::Status::OK;
  }

  grpc::Status CancelAudit(grpc::ServerContext*, const v1::CancelAuditRequest* request,
                           v1::AuditJob* response) override {
    cancelled = true;
    response->set_id(request->id());
    response->set_state(v1::JOB_CANCELLED);
    return grpc::Status::OK;
  }

  v1::SampleRequest last_sample() {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_sample_;
  }
  v1::SpectrumRequest last_spectrum() {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_spectrum_;
  }
  v1::AuditRequest last_audit() {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_audit_;
  }

  std::atomic<int> stream_calls{0};
  std::atomic<bool> watching{false};
  std::atomic<bool> cancelled{false};

 private:
  template <typename Message>
  void Record(const Message& message, Message* into) {
    std::lock_guard<std::mutex> lock(mutex_);
    *into = message;
  }

  std::mutex mutex_;
  v1::SampleRequest last_sample_;
  v1::SpectrumRequest last_spectrum_;
  v1::AuditRequest last_audit_;
};

struct CliResult {
  int exit_code = -1;     // the CLI's own exit code
  bool signaled = false;  // killed by a signal instead
  std::string out, err;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class FakeServerTest : public testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&audits_);
    builder.RegisterService(&models_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    target_ = "127.0.0.1:" + std::to_string(port_);
  }
  void TearDown() override {
    // The deadline cancels the calls the fake holds open.
    server_->Shutdown(std::chrono::system_clock::now() + milliseconds(500));
  }

  Client client() const { return Client(target_, std::chrono::seconds(10)); }

  // Runs `memaudit --server <fake> args...`; `while_running` (optional) is
  // given its pid before it is waited for.
  // Runs the CLI with `args` (after "--server <the fake>" unless
  // `with_server` is false).
  CliResult Cli(const std::vector<std::string>& args,
                const std::function<void(pid_t)>& while_running = {}, bool with_server = true) {
    const std::string base = testing::TempDir() + "/client_test_" + std::to_string(getpid()) + "_" +
                             std::to_string(runs_++);
    const std::string out_path = base + ".out", err_path = base + ".err";
    std::vector<std::string> argv_strings = {MEMAUDIT_CLI_BINARY};
    if (with_server) argv_strings.insert(argv_strings.end(), {"--server", target_});
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& arg : argv_strings) argv.push_back(arg.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid = 0;
    const int spawned = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    CliResult result;
    if (spawned != 0) {
      ADD_FAILURE() << "cannot run " << argv[0] << ": " << std::strerror(spawned);
      return result;
    }
    if (while_running) while_running(pid);
    int status = 0;
    waitpid(pid, &status, 0);
    result.signaled = WIFSIGNALED(status);
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    result.out = ReadFile(out_path);
    result.err = ReadFile(err_path);
    std::remove(out_path.c_str());
    std::remove(err_path.c_str());
    return result;
  }

  // `while_running` for Cli: Ctrl-C once the CLI is in its streaming call
  // (`in_call` says when).
  std::function<void(pid_t)> InterruptWhen(std::function<bool()> in_call) {
    return [in_call](pid_t pid) {
      ASSERT_TRUE(WaitFor(in_call));
      kill(pid, SIGINT);
    };
  }

  FakeAudits audits_;
  FakeModels models_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string target_;
  int runs_ = 0;
};

// --- Client::StreamSamples and WatchAudit -------------------------------

v1::SampleRequest SampleRequest(const std::string& model, std::vector<uint64_t> seeds) {
  v1::SampleRequest request;
  request.set_model(model);
  for (uint64_t seed : seeds) request.add_seeds(seed);
  return request;
}

TEST_F(FakeServerTest, StreamSamplesDeliversOneResponsePerSeedInOrder) {
  std::vector<uint64_t> seeds;
  std::vector<int64_t> first_shape;
  absl::Status status =
      client().StreamSamples(SampleRequest("toy", {7, 8, 9}), [&](const v1::SampleResponse& r) {
        seeds.insert(seeds.end(), r.seeds().begin(), r.seeds().end());
        if (first_shape.empty())
          first_shape.assign(r.samples().shape().begin(), r.samples().shape().end());
        return absl::OkStatus();
      });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(seeds, (std::vector<uint64_t>{7, 8, 9}));
  EXPECT_EQ(first_shape, (std::vector<int64_t>{1, 2}));
}

TEST_F(FakeServerTest, StreamSamplesReturnsTheServersError) {
  int received = 0;
  absl::Status status =
      client().StreamSamples(SampleRequest("failing", {1, 2}), [&](const v1::SampleResponse&) {
        ++received;
        return absl::OkStatus();
      });
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(status.message(), "out of memory");
  EXPECT_EQ(received, 1);
}

TEST_F(FakeServerTest, StreamSamplesStopsAtTheCallbacksError) {
  int received = 0;
  absl::Status status =
      client().StreamSamples(SampleRequest("toy", {1, 2, 3}), [&](const v1::SampleResponse&) {
        ++received;
        return absl::DataLossError("bad tensor");
      });
  EXPECT_EQ(status, absl::DataLossError("bad tensor"));
  EXPECT_EQ(received, 1);
}

TEST_F(FakeServerTest, StreamSamplesCanBeInterrupted) {
  std::atomic<bool> interrupt{false};
  std::thread later([&] {
    WaitFor([&] { return audits_.stream_calls.load() > 0; });
    interrupt = true;
  });
  absl::Status status = client().StreamSamples(
      SampleRequest("endless", {1}), [](const v1::SampleResponse&) { return absl::OkStatus(); },
      [&] { return interrupt.load(); });
  later.join();
  EXPECT_EQ(status, absl::CancelledError("interrupted"));
}

TEST_F(FakeServerTest, WatchAuditReturnsTheFinishedJob) {
  std::vector<v1::AuditPhase> phases;
  absl::StatusOr<v1::AuditJob> job =
      client().WatchAudit("audit-partial", [&](const v1::AuditEvent& event) {
        if (event.has_progress()) phases.push_back(event.progress().phase());
      });
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->report().verdict(), v1::PARTIAL);
  EXPECT_EQ(phases.size(), 4u);
  EXPECT_EQ(phases.back(), v1::AUDIT_PHASE_MEASURED);
}

TEST_F(FakeServerTest, WatchAuditCanBeInterrupted) {
  absl::StatusOr<v1::AuditJob> job = client().WatchAudit(
      "audit-endless", [](const v1::AuditEvent&) {}, [&] { return audits_.watching.load(); });
  EXPECT_EQ(job.status(), absl::CancelledError("interrupted"));
}

// --- The CLI -------------------------------------------------------------

TEST_F(FakeServerTest, CliHealthAndModels) {
  CliResult health = Cli({"health"});
  EXPECT_EQ(health.exit_code, 0) << health.err;
  EXPECT_EQ(health.out, "SERVING\n");
  CliResult models = Cli({"models", "--json"});
  EXPECT_EQ(models.exit_code, 0) << models.err;
  EXPECT_EQ(models.out, ModelsJson(FakeModels::List()).dump(2) + "\n");
  CliResult table = Cli({"models"});
  EXPECT_EQ(table.out, ModelTable(FakeModels::List()));
}

// Global flags may follow the subcommand ("arguments were not expected"
// before), and a bad --server is refused before dialling (127.0.0.1:99999
// used to dial port 34463).
TEST_F(FakeServerTest, CliTakesConnectionFlagsAfterTheSubcommandAndChecksThem) {
  CliResult after = Cli({"health", "--server", target_}, {}, /*with_server=*/false);
  EXPECT_EQ(after.exit_code, 0) << after.err;
  EXPECT_EQ(after.out, "SERVING\n");
  CliResult bad = Cli({"health", "--server", "127.0.0.1:99999"}, {}, /*with_server=*/false);
  EXPECT_EQ(bad.exit_code, 1) << bad.err;
  EXPECT_EQ(bad.err,
            "memaudit: INVALID_ARGUMENT: --server: \"127.0.0.1:99999\": the port must be a number "
            "in 1..65535\n");
}

TEST_F(FakeServerTest, CliSampleStreamsEverySeed) {
  CliResult result =
      Cli({"sample", "--model", "toy", "--count", "3", "--seed", "5", "--sampler", "ddpm"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "seed 5: 5.0000 -5.0000\nseed 6: 6.0000 -6.0000\nseed 7: 7.0000 -7.0000\n");
  EXPECT_EQ(result.err, "");  // no progress bar off a terminal
  EXPECT_EQ(audits_.stream_calls.load(), 1);
  EXPECT_EQ(audits_.last_sample().sampling().sampler(), v1::DDPM);
}

TEST_F(FakeServerTest, CliErrorsAreOneLineAndExit1) {
  CliResult result = Cli({"sample", "--model", "failing", "--count", "2"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(result.err, "memaudit: RESOURCE_EXHAUSTED: out of memory\n");
  result = Cli({"get", "audit-missing"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(result.err, "memaudit: NOT_FOUND: no audit audit-missing\n");
  // Output files: the format is the name's, refused before any sampling
  // when it is neither; a missing directory is named as such.
  const int64_t streams = audits_.stream_calls.load();
  result = Cli({"sample", "--model", "toy", "--count", "2", "--out", "samples.txt"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(result.err,
            "memaudit: INVALID_ARGUMENT: --out samples.txt: give a .png or .npy file name\n");
  EXPECT_EQ(audits_.stream_calls.load(), streams);
  result = Cli({"sample", "--model", "toy", "--count", "2", "--out", "/no-such-dir/x.npy"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(result.err,
            "memaudit: NOT_FOUND: /no-such-dir/x.npy: cannot open for writing: No such file or "
            "directory\n");
}

// Text that is not UTF-8 is refused by the client, naming the field (the
// server's parser would answer INTERNAL with an empty message).
TEST_F(FakeServerTest, StringsThatAreNotUtf8AreRefusedNamingTheField) {
  auto model = client().GetModel("bad \xff name");
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(model.status().message(), "name: not valid UTF-8 (text fields must be)");
  v1::AuditRequest request;
  request.set_model("toy");
  request.add_conditions()->set_class_label(1);
  request.add_conditions()->set_prompt("a \xc3 prompt");
  auto job = client().SubmitAudit(request);
  EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(job.status().message().find("conditions[1].prompt"), std::string::npos) << job.status();
  EXPECT_TRUE(CheckStringsAreUtf8(v1::AuditRequest()).ok());
  request.mutable_conditions(1)->set_prompt("a prompt: ça, 東京, 🎨");
  EXPECT_TRUE(CheckStringsAreUtf8(request).ok());
  CliResult cli = Cli({"models", "bad \xff"});
  EXPECT_EQ(cli.exit_code, 1);
  EXPECT_EQ(cli.err, "memaudit: INVALID_ARGUMENT: name: not valid UTF-8 (text fields must be)\n");
}

TEST_F(FakeServerTest, CliRejectsUnknownWordsWithExit2) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"sample", "--model", "toy", "--sampler", "ddpn"},
                                             {"audit", "--model", "toy", "--sampler", "DDPM"},
                                             {"audit", "--model", "toy", "--score-kind", "guide"},
                                             {"audit", "--model", "toy", "--method", "lanczos"},
                                             {"audit", "--model", "toy", "--fail-on", "sometimes"},
                                             {"spectrum", "--model", "toy", "--target", "largest"},
                                             {"watch", "audit-x", "--fail-on", "always"},
                                             // Counts and seeds out of range: never a
                                             // silent default or a wrapped seed.
                                             {"sample", "--model", "toy", "--count", "0"},
                                             {"early", "--model", "toy", "--count", "-3"},
                                             {"audit", "--model", "toy", "--samples", "0"},
                                             {"audit", "--model", "toy", "--seed", "-1"},
                                             {"audit", "--model", "toy", "--steps", "0"},
                                             {"spectrum", "--model", "toy", "-k", "0"},
                                             {"mitigate", "--model", "toy", "--count", "0"},
                                             {"audit"},  // --model is required
                                             {}}) {
    CliResult result = Cli(args);
    EXPECT_EQ(result.exit_code, 2) << testing::PrintToString(args) << "\n" << result.err;
  }
  EXPECT_EQ(audits_.last_audit().model(), "");  // nothing was submitted
  EXPECT_EQ(Cli({"--help"}).exit_code, 0);
}

TEST_F(FakeServerTest, CliSendsTheWordsItWasGiven) {
  CliResult audit = Cli({"audit", "--model", "toy", "--class", "1", "--class", "2", "--sampler",
                         "ddpm", "--score-kind", "difference", "--method", "arnoldi", "-k", "6",
                         "--fail-on", "never", "--quiet"});
  EXPECT_EQ(audit.exit_code, 0) << audit.err;
  const v1::AuditRequest request = audits_.last_audit();
  EXPECT_EQ(request.conditions_size(), 2);
  EXPECT_EQ(request.sampling().sampler(), v1::DDPM);
  EXPECT_EQ(request.curvature().score_kind(), v1::DIFFERENCE);
  EXPECT_EQ(request.curvature().method(), v1::ARNOLDI);
  EXPECT_EQ(request.curvature().num_eigenvalues(), 6);

  CliResult spectrum =
      Cli({"spectrum", "--model", "toy", "--target", "smallest_real", "--symmetrize", "--json"});
  EXPECT_EQ(spectrum.exit_code, 0) << spectrum.err;
  EXPECT_EQ(audits_.last_spectrum().curvature().target(), v1::SMALLEST_REAL);
  EXPECT_TRUE(audits_.last_spectrum().curvature().symmetrize());
  EXPECT_EQ(audits_.last_spectrum().sampling().sampler(), v1::DDIM);  // the default
  EXPECT_NE(spectrum.out.find("\"method\": \"arnoldi\""), std::string::npos) << spectrum.out;
}

TEST_F(FakeServerTest, CliAuditGateAndProgress) {
  CliResult gated = Cli({"audit", "--model", "memorizing"});
  EXPECT_EQ(gated.exit_code, 3);
  EXPECT_EQ(gated.out, "audit audit-memorizing\n" +
                           AuditReportText(FinishedJob("audit-memorizing").report(), false));
  // Off a terminal: one progress line per measured batch.
  EXPECT_EQ(gated.err,
            "audit audit-memorizing submitted\n"
            "progress: 2/2 samples (class 1)\n"
            "memaudit: verdict MEMORIZED reaches --fail-on memorized\n");

  EXPECT_EQ(Cli({"audit", "--model", "memorizing", "--fail-on", "never"}).exit_code, 0);
  EXPECT_EQ(Cli({"audit", "--model", "partial"}).exit_code, 0);
  CliResult partial = Cli({"audit", "--model", "partial", "--fail-on", "partial", "--quiet"});
  EXPECT_EQ(partial.exit_code, 3);
  EXPECT_EQ(partial.err, "memaudit: verdict PARTIAL reaches --fail-on partial\n");

  // --json: the report on stdout, the progress still on stderr (a 73-second
  // audit used to print nothing there); --quiet silences it.
  CliResult json = Cli({"audit", "--model", "memorizing", "--json", "--fail-on", "never"});
  EXPECT_EQ(json.exit_code, 0);
  EXPECT_EQ(json.out, AuditReportJson(FinishedJob("audit-memorizing")).dump(2) + "\n");
  EXPECT_EQ(json.err,
            "audit audit-memorizing submitted\n"
            "progress: 2/2 samples (class 1)\n");
  CliResult quiet_json =
      Cli({"audit", "--model", "memorizing", "--json", "--quiet", "--fail-on", "never"});
  EXPECT_EQ(quiet_json.out, json.out);
  EXPECT_EQ(quiet_json.err, "");
}

TEST_F(FakeServerTest, CliJobCommands) {
  CliResult running = Cli({"get", "audit-running"});
  EXPECT_EQ(running.exit_code, 0) << running.err;
  EXPECT_EQ(running.out, "audit-running JOB_RUNNING 1/4\n");
  // get shows a finished job; it is no gate.
  EXPECT_EQ(Cli({"get", "audit-memorizing"}).exit_code, 0);
  EXPECT_EQ(Cli({"watch", "audit-memorizing"}).exit_code, 3);
  CliResult cancel = Cli({"cancel", "audit-x"});
  EXPECT_EQ(cancel.out, "audit-x JOB_CANCELLED\n");
  // A fanned-out report names each shard's job ADDRESS/ID: the address wins
  // over --server (here a port nobody listens on).
  const std::string elsewhere = target_ + "/audit-running";
  CliResult shard = Cli({"--server", "127.0.0.1:1", "get", elsewhere}, {}, /*with_server=*/false);
  EXPECT_EQ(shard.exit_code, 0) << shard.err;
  EXPECT_EQ(shard.out, "audit-running JOB_RUNNING 1/4\n");
  CliResult watched =
      Cli({"--server", "127.0.0.1:1", "watch", "--quiet", target_ + "/audit-memorizing"}, {},
          /*with_server=*/false);
  EXPECT_EQ(watched.exit_code, 3) << watched.err;
  EXPECT_EQ(Cli({"--server", "127.0.0.1:1", "cancel", target_ + "/audit-x"}, {},
                /*with_server=*/false)
                .out,
            "audit-x JOB_CANCELLED\n");
  CliResult both = Cli({"get", elsewhere + "," + elsewhere});
  EXPECT_EQ(both.exit_code, 1);
  EXPECT_EQ(both.err, "memaudit: INVALID_ARGUMENT: \"" + elsewhere + "," + elsewhere +
                          "\" names several jobs (the shards of a fanned-out audit): give one "
                          "ADDRESS/ID at a time\n");
  // Only an audit fans out; other commands say so instead of failing on DNS.
  CliResult listed =
      Cli({"--server", target_ + "," + target_, "models"}, {}, /*with_server=*/false);
  EXPECT_EQ(listed.exit_code, 1);
  EXPECT_EQ(listed.err,
            "memaudit: INVALID_ARGUMENT: --server lists 2 servers; only `audit` fans out: give "
            "`models` one (a shard's job is ADDRESS/ID)\n");
}

TEST_F(FakeServerTest, CliCtrlCWhileWatchingCancelsTheJob) {
  CliResult result =
      Cli({"watch", "audit-endless"}, InterruptWhen([this] { return audits_.watching.load(); }));
  EXPECT_FALSE(result.signaled);
  EXPECT_EQ(result.exit_code, 130);
  EXPECT_EQ(result.err, "memaudit: interrupted; audit audit-endless cancelled\n");
  EXPECT_TRUE(audits_.cancelled.load());
}

TEST_F(FakeServerTest, CliCtrlCWhileSampling) {
  CliResult result = Cli({"sample", "--model", "endless"},
                         InterruptWhen([this] { return audits_.stream_calls.load() > 0; }));
  EXPECT_FALSE(result.signaled);
  EXPECT_EQ(result.exit_code, 130);
  EXPECT_EQ(result.err, "memaudit: CANCELLED: interrupted\n");
}

// Prompt files (--prompts, --memorized-prompts): plain lines or JSON Lines.
TEST(PromptFilesTest, PlainLinesAndJsonLinesAndTheirErrors) {
  char pattern[] = "/tmp/memaudit-prompts-XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const std::string dir = pattern;
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name, std::ios::binary) << text;
    return dir + "/" + name;
  };
  auto plain =
      ReadPromptFile(write("plain.txt", "a cat\r\n\n  \n{not json at start? no: plain}\nünï 🎨\n"));
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_EQ(plain->size(), 3u);
  EXPECT_EQ((*plain)[0].prompt(), "a cat");  // \r dropped, blank lines skipped
  EXPECT_EQ((*plain)[1].prompt(), "{not json at start? no: plain}");
  EXPECT_EQ((*plain)[2].prompt(), "ünï 🎨");
  EXPECT_TRUE((*plain)[0].name().empty());

  auto lines = ReadPromptFile(write("p.jsonl",
                                    "{\"id\": \"a\", \"prompt\": \"first\"}\n\n"
                                    "{\"id\": 42, \"prompt\": \"second\", \"extra\": [1]}\n"
                                    "{\"prompt\": \"\"}\n"));
  ASSERT_TRUE(lines.ok()) << lines.status();
  ASSERT_EQ(lines->size(), 3u);
  EXPECT_EQ((*lines)[0].name(), "a");
  EXPECT_EQ((*lines)[1].name(), "42");
  EXPECT_EQ((*lines)[1].prompt(), "second");
  EXPECT_TRUE((*lines)[2].name().empty());
  EXPECT_TRUE((*lines)[2].has_prompt());  // the empty prompt is a prompt

  const struct {
    std::string text, message;
  } bad[] = {
      {"{\"prompt\": \"ok\"}\nnot json\n", "bad.txt:2: not a JSON object"},
      {"{\"prompt\": 7}\n", "bad.txt:1: needs a string \"prompt\""},
      {"{\"prompt\": \"x\", \"id\": 1.5}\n", "bad.txt:1: \"id\" must be a string or an integer"},
      {"ok\ncaf\xc3\n", "bad.txt:2: not valid UTF-8"},
      {"\n  \n", "bad.txt: holds no prompt"},
  };
  for (const auto& c : bad) {
    auto read = ReadPromptFile(write("bad.txt", c.text));
    EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_NE(read.status().message().find(c.message), std::string::npos) << read.status();
  }
  EXPECT_EQ(ReadPromptFile(dir + "/missing.txt").status().code(), absl::StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace memaudit::client
