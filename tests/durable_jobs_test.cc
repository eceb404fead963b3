// Durable jobs end to end (memaudit-server --state_dir): kill -9 in the
// middle of an audit and a restart on the same directory finish the job
// with the report of an uninterrupted run; a locked, corrupt or unusable
// directory stops the start with a message naming it; a full disk fails the
// job, not the server.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "client/client.h"
#include "google/protobuf/util/message_differencer.h"
#include "tests/server_process.h"
#include "tests/test_util.h"

namespace memaudit {
namespace {

using client::Client;
using testing::ServerProcess;
using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Polls the job until `done` says so (or 120 s pass); returns the last state.
template <typename Done>
v1::AuditJob PollJob(Client& client, const std::string& id, Done done) {
  v1::AuditJob job;
  for (int i = 0; i < 12000; ++i) {
    auto got = client.GetAudit(id);
    if (got.ok()) {
      job = *got;
      if (done(job)) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return job;
}

bool Ended(const v1::AuditJob& job) {
  return job.state() == v1::JOB_SUCCEEDED || job.state() == v1::JOB_FAILED ||
         job.state() == v1::JOB_CANCELLED;
}

class DurableJobsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = new testing::ScratchDir();
    ASSERT_TRUE(testing::WriteMixtureDirectory(scratch_->Join("models"), "mix",
                                               testing::PointMassAndBroadClasses(4, 3),
                                               v1::NoiseSchedule::LINEAR, v1::EPSILON, 3)
                    .ok());
  }
  static void TearDownTestSuite() { delete scratch_; }

  // A server on the suite's models with `args`; its log and port file in a
  // directory of its own.
  std::unique_ptr<ServerProcess> StartServer(const std::vector<std::string>& args) {
    const std::string logs = scratch_->Join("server-" + std::to_string(servers_++));
    std::filesystem::create_directories(logs);
    return std::make_unique<ServerProcess>(MEMAUDIT_SERVER_BINARY, scratch_->Join("models"), logs,
                                           args);
  }
  static Client Connect(const ServerProcess& server) {
    return Client(server.target(), std::chrono::seconds(30));
  }
  // Three classes, 3 × 96 samples in batches of 8: long enough (seconds) to
  // be killed half-way on one thread.
  static v1::AuditRequest LongAudit() {
    v1::AuditRequest request;
    request.set_model("mix");
    for (int64_t c : {0, 1, 2}) request.add_conditions()->set_class_label(c);
    request.set_samples_per_condition(96);
    request.set_seed(7);
    request.mutable_sampling()->set_num_steps(100);
    return request;
  }

  static testing::ScratchDir* scratch_;
  int servers_ = 0;
};

testing::ScratchDir* DurableJobsTest::scratch_ = nullptr;

TEST_F(DurableJobsTest, KillNineMidAuditThenRestartFinishesWithTheUninterruptedReport) {
  const std::string state = scratch_->Join("state-kill");
  const std::vector<std::string> args = {"--state_dir=" + state};
  const v1::AuditRequest request = LongAudit();
  const int64_t total = 3 * request.samples_per_condition();
  std::string id;
  int64_t done_at_kill = 0;
  {
    auto server = StartServer(args);
    ASSERT_GT(server->grpc_port(), 0) << server->Log();
    Client client = Connect(*server);
    ASSERT_TRUE(client.WaitUntilServing(std::chrono::seconds(60)).ok()) << server->Log();
    auto submitted = client.SubmitAudit(request);
    ASSERT_TRUE(submitted.ok()) << submitted.status();
    id = submitted->id();
    const v1::AuditJob half = PollJob(client, id, [&](const v1::AuditJob& job) {
      return Ended(job) || job.progress().samples_done() >= total / 2;
    });
    ASSERT_FALSE(Ended(half)) << "the audit ended before the kill; make it longer";
    done_at_kill = half.progress().samples_done();
    server->Signal(SIGKILL);
  }  // reaped

  const Clock::time_point restart = Clock::now();
  auto server = StartServer(args);
  ASSERT_GT(server->grpc_port(), 0) << server->Log();
  Client client = Connect(*server);
  // Served from the store at once, before the models are loaded.
  auto restored = client.GetAudit(id);
  ASSERT_TRUE(restored.ok()) << restored.status() << server->Log();
  EXPECT_EQ(restored->resumed(), 1);
  const int64_t reused = restored->progress().samples_done();
  EXPECT_GE(reused, done_at_kill);  // nothing acknowledged is lost
  // The time the stored work took comes back with it, and the report's
  // timing continues from it (before: it covered only the run after the
  // restart).
  const v1::AuditTiming before_kill = restored->progress().timing();
  EXPECT_GT(before_kill.total_seconds(), 0.0);
  EXPECT_GT(before_kill.sampling_seconds(), 0.0);
  EXPECT_GE(before_kill.total_seconds(),
            before_kill.sampling_seconds() + before_kill.curvature_seconds());
  const v1::AuditJob running =
      PollJob(client, id, [](const v1::AuditJob& job) { return job.state() != v1::JOB_QUEUED; });
  const double recovery_seconds = SecondsSince(restart);
  const v1::AuditJob resumed = PollJob(client, id, Ended);
  ASSERT_EQ(resumed.state(), v1::JOB_SUCCEEDED) << resumed.error() << server->Log();
  EXPECT_NE(running.state(), v1::JOB_QUEUED);
  const double run_after_restart = SecondsSince(restart);
  const v1::AuditTiming& timing = resumed.report().timing();
  EXPECT_GT(timing.total_seconds(), before_kill.total_seconds());
  EXPECT_LE(timing.total_seconds(), before_kill.total_seconds() + run_after_restart);
  EXPECT_GT(timing.sampling_seconds(), before_kill.sampling_seconds());
  EXPECT_GE(timing.total_seconds(), timing.sampling_seconds() + timing.curvature_seconds());
  std::printf(
      "kill -9 at >= %lld/%lld samples; restart to running: %.2f s; samples reused %lld, "
      "computed after the restart %lld (lost: the batch in flight, <= 8)\n",
      static_cast<long long>(done_at_kill), static_cast<long long>(total), recovery_seconds,
      static_cast<long long>(reused), static_cast<long long>(total - reused));

  // The same request, uninterrupted, on the same server.
  auto again = client.SubmitAudit(request);
  ASSERT_TRUE(again.ok()) << again.status();
  const v1::AuditJob uninterrupted = PollJob(client, again->id(), Ended);
  ASSERT_EQ(uninterrupted.state(), v1::JOB_SUCCEEDED) << uninterrupted.error();
  std::printf(
      "report total_seconds: %.2f resumed (%.2f of it stored before the kill), %.2f "
      "uninterrupted\n",
      timing.total_seconds(), before_kill.total_seconds(),
      uninterrupted.report().timing().total_seconds());
  v1::AuditReport expected = uninterrupted.report(), actual = resumed.report();
  expected.clear_timing();
  actual.clear_timing();
  std::string difference;
  google::protobuf::util::MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&difference);
  EXPECT_TRUE(differencer.Compare(expected, actual)) << difference;
  std::printf("store: %lld bytes (database + log) for 2 jobs, %lld sample reports\n",
              static_cast<long long>(std::filesystem::file_size(state + "/jobs.sqlite") +
                                     std::filesystem::file_size(state + "/jobs.sqlite-wal")),
              static_cast<long long>(2 * total));
}

// `memaudit audit` following a job on a durable server that dies said only
// "UNAVAILABLE: Socket closed"; it now says the job resumes there and how to
// follow it, and the command it names does follow it to the end.
TEST_F(DurableJobsTest, TheCliSaysHowToFollowAJobWhoseServerDied) {
  const std::string state = scratch_->Join("state-cli");
  const std::vector<std::string> args = {"--state_dir=" + state};
  auto server = StartServer(args);
  ASSERT_GT(server->grpc_port(), 0) << server->Log();
  Client client = Connect(*server);
  ASSERT_TRUE(client.WaitUntilServing(std::chrono::seconds(60)).ok()) << server->Log();
  testing::CommandResult audit;
  std::thread cli([&] {
    audit =
        testing::RunShell(std::string(MEMAUDIT_CLI_BINARY) + " audit --server " + server->target() +
                          " --model mix --class 0 --class 1 --class 2 --samples 96 --seed 7 "
                          "--steps 100 2>&1");
  });
  std::string id;
  for (int i = 0; i < 3000 && id.empty(); ++i) {
    auto jobs = client.ListAudits();
    if (jobs.ok() && jobs->jobs_size() > 0 && jobs->jobs(0).progress().samples_done() > 0) {
      id = jobs->jobs(0).id();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_FALSE(id.empty()) << server->Log();
  server->Signal(SIGKILL);
  cli.join();
  EXPECT_NE(audit.exit_code, 0);
  EXPECT_NE(audit.output.find("UNAVAILABLE"), std::string::npos) << audit.output;
  EXPECT_NE(audit.output.find("lost the server while following audit " + id +
                              ". A server with --state_dir resumes it when it restarts: follow "
                              "it with `memaudit watch " +
                              id + "`"),
            std::string::npos)
      << audit.output;
  server.reset();
  auto restarted = StartServer(args);
  ASSERT_GT(restarted->grpc_port(), 0) << restarted->Log();
  const testing::CommandResult watch =
      testing::RunShell(std::string(MEMAUDIT_CLI_BINARY) + " watch --server " +
                        restarted->target() + " " + id + " --quiet --fail-on never 2>&1");
  EXPECT_EQ(watch.exit_code, 0) << watch.output << restarted->Log();
  EXPECT_NE(watch.output.find("MEMORIZED"), std::string::npos) << watch.output;
}

TEST_F(DurableJobsTest, TwoServersRefuseToShareAStateDirectory) {
  const std::string state = scratch_->Join("state-shared");
  auto first = StartServer({"--state_dir=" + state});
  ASSERT_GT(first->grpc_port(), 0) << first->Log();
  auto second = StartServer({"--state_dir=" + state});
  EXPECT_EQ(second->grpc_port(), 0);
  EXPECT_EQ(second->AwaitExit(30), 1);
  EXPECT_NE(second->Log().find("--state_dir " + state + ": in use by another memaudit-server"),
            std::string::npos)
      << second->Log();
  Client client = Connect(*first);
  EXPECT_TRUE(
      client.WaitUntilServing(std::chrono::seconds(60)).ok());  // the first one is unaffected
}

TEST_F(DurableJobsTest, ACorruptOrUnusableStateDirectoryStopsTheStartWithItsName) {
  const std::string corrupt = scratch_->Join("state-corrupt");
  std::filesystem::create_directories(corrupt);
  testing::WriteFile(corrupt + "/jobs.sqlite", std::string(8192, '#'));
  auto server = StartServer({"--state_dir=" + corrupt});
  EXPECT_EQ(server->AwaitExit(30), 1);
  EXPECT_NE(server->Log().find(corrupt + "/jobs.sqlite"), std::string::npos) << server->Log();
  EXPECT_NE(server->Log().find("away to start with an empty store"), std::string::npos)
      << server->Log();

  testing::WriteFile(scratch_->Join("a-file"), "x\n");
  auto unusable = StartServer({"--state_dir=" + scratch_->Join("a-file/state")});
  EXPECT_EQ(unusable->AwaitExit(30), 1);
  EXPECT_NE(unusable->Log().find("--state_dir " + scratch_->Join("a-file/state") +
                                 ": cannot create the directory"),
            std::string::npos)
      << unusable->Log();
}

// A full disk, as a file-size limit on the server process: the audit fails
// with the store's error, and the server keeps serving.
TEST_F(DurableJobsTest, AFullDiskFailsTheJobAndTheServerKeepsServing) {
  const std::string state = scratch_->Join("state-full");
  rlimit saved;
  getrlimit(RLIMIT_FSIZE, &saved);
  rlimit limited = saved;
  limited.rlim_cur = 160 * 1024;  // the empty store and a few batches fit
  struct sigaction ignore = {}, previous = {};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGXFSZ, &ignore, &previous);
  setrlimit(RLIMIT_FSIZE, &limited);
  auto server = StartServer({"--state_dir=" + state});
  setrlimit(RLIMIT_FSIZE, &saved);  // inherited by the server only
  sigaction(SIGXFSZ, &previous, nullptr);
  ASSERT_GT(server->grpc_port(), 0) << server->Log();
  Client client = Connect(*server);
  ASSERT_TRUE(client.WaitUntilServing(std::chrono::seconds(60)).ok()) << server->Log();

  v1::AuditRequest request = LongAudit();
  request.mutable_sampling()->set_num_steps(10);
  for (int64_t t : {10, 20, 40, 60, 80, 100, 150, 200, 300, 400, 500, 600, 700, 800}) {
    request.add_timesteps(t);  // a κ profile: larger sample reports
  }
  auto submitted = client.SubmitAudit(request);
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  const v1::AuditJob failed = PollJob(client, submitted->id(), Ended);
  EXPECT_EQ(failed.state(), v1::JOB_FAILED);
  EXPECT_NE(failed.error().find("job store " + state + "/jobs.sqlite"), std::string::npos)
      << failed.error();
  EXPECT_GT(failed.progress().samples_done(), 0);
  // Still serving: health, the model list, and a small request.
  auto health = client.Health();
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(*health, "SERVING");
  EXPECT_TRUE(client.ListModels().ok());
  v1::SampleRequest sample;
  sample.set_model("mix");
  sample.add_seeds(1);
  sample.mutable_condition()->set_class_label(1);
  EXPECT_TRUE(client.Sample(sample).ok());
}

}  // namespace
}  // namespace memaudit
