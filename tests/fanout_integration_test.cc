// The fan-out end to end: three real memaudit-server processes on loopback
// ports, the client library's fan-out runner and the real `memaudit` CLI.
// A replica killed (SIGKILL) or frozen (SIGSTOP: a hung process or a
// network partition) in the middle of a fanned-out audit has its shards
// resubmitted to the others, and the merged report equals the
// report one server makes of the same request (timing aside); so do the
// batch shards of `audit --shard-index` merged by `memaudit merge`.
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/client.h"
#include "client/fanout_runner.h"
#include "tests/server_process.h"
#include "tests/test_util.h"

namespace memaudit {
namespace {

using client::Client;
using google::protobuf::util::MessageDifferencer;
using testing::ServerProcess;

constexpr int kReplicas = 4;  // replicas 2 and 3 are the victims
constexpr int64_t kClasses = 4;

// The audit: 2 classes of the model "pm" (class 0 a point mass, whose
// samples are all copies; class 1 a broad Gaussian), 48 samples each. With
// 6 shards each class is cut into three blocks of two whole batches of 8
// samples: a kill after a shard's first batch lands midway, and every shard
// batches its samples as one server does.
v1::AuditRequest Audit() {
  v1::AuditRequest request;
  request.set_model("pm");
  request.add_conditions()->set_class_label(0);
  request.add_conditions()->set_class_label(1);
  request.set_samples_per_condition(48);
  request.set_seed(5);
  return request;
}

// The same audit as CLI arguments.
constexpr char kAuditArgs[] = "audit --model pm --class 0 --class 1 --samples 48 --seed 5";

class FanoutIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = new testing::ScratchDir();
    const std::string repository = scratch_->Join("models");
    ASSERT_TRUE(testing::WriteMixtureDirectory(repository, "pm",
                                               testing::PointMassAndBroadClasses(32, kClasses),
                                               v1::NoiseSchedule::LINEAR, v1::EPSILON, kClasses)
                    .ok());
    for (int r = 0; r < kReplicas; ++r) {
      const std::string dir = scratch_->Join(absl::StrCat("replica", r));
      std::filesystem::create_directories(dir);
      servers_[r] = new ServerProcess(MEMAUDIT_SERVER_BINARY, repository, dir);
      ASSERT_GT(servers_[r]->grpc_port(), 0) << servers_[r]->Log();
    }
    for (ServerProcess* server : servers_) {
      ASSERT_TRUE(WaitUntilServing(*server)) << server->Log();
    }
    // The reference: one server's report of the whole audit.
    Client one(servers_[0]->target(), std::chrono::seconds(60));
    absl::StatusOr<v1::AuditJob> job = one.SubmitAudit(Audit());
    ASSERT_TRUE(job.ok()) << job.status();
    absl::StatusOr<v1::AuditJob> done = one.WatchAudit(job->id(), {});
    ASSERT_TRUE(done.ok()) << done.status();
    ASSERT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->error();
    single_ = new v1::AuditReport(done->report());
  }
  static bool WaitUntilServing(const ServerProcess& server) {
    return Client(server.target(), std::chrono::seconds(5))
        .WaitUntilServing(std::chrono::seconds(60))
        .ok();
  }
  static void TearDownTestSuite() {
    for (ServerProcess*& server : servers_) {
      delete server;
      server = nullptr;
    }
    delete single_;
    delete scratch_;
  }

  // `report` equals the single server's report, timing aside.
  static void ExpectSameAsOneServer(v1::AuditReport report) {
    v1::AuditReport single = *single_;
    report.clear_timing();
    single.clear_timing();
    std::string differences;
    MessageDifferencer differencer;
    differencer.ReportDifferencesToString(&differences);
    EXPECT_TRUE(differencer.Compare(single, report)) << differences;
  }

  // `memaudit --server <server> args`, its stdout and exit code.
  static testing::CommandResult Cli(const std::string& server, const std::string& args) {
    return testing::RunShell(
        absl::StrCat(MEMAUDIT_CLI_BINARY, " --server ", server, " ", args, " 2>&1"));
  }
  // A --json report without what differs from run to run.
  static nlohmann::json Comparable(const std::string& text) {
    nlohmann::json json = nlohmann::json::parse(text);
    json.erase("job_id");
    json.erase("timing");
    return json;
  }

  static testing::ScratchDir* scratch_;
  static ServerProcess* servers_[kReplicas];
  static v1::AuditReport* single_;
};

testing::ScratchDir* FanoutIntegrationTest::scratch_ = nullptr;
ServerProcess* FanoutIntegrationTest::servers_[kReplicas] = {};
v1::AuditReport* FanoutIntegrationTest::single_ = nullptr;

// A fanned-out Audit() over replicas 0, 1 and `victim`, sending `signal`
// to the victim as soon as one of its shards has measured a batch: its
// other shard is then running or queued, and both must move elsewhere.
struct VictimRun {
  absl::StatusOr<client::FanoutResult> result = absl::UnknownError("not run");
  bool signalled = false;
  std::vector<std::string> notices;  // on_notice lines
  double seconds = 0;
};
VictimRun RunWithVictim(ServerProcess* const (&servers)[kReplicas], int victim, int signal,
                        std::chrono::milliseconds keepalive) {
  std::vector<client::Replica> replicas;
  for (int r : {0, 1, victim}) replicas.push_back({servers[r]->target(), ""});
  const std::string target = servers[victim]->target();
  VictimRun run;
  std::atomic<bool> signalled{false};
  std::mutex mu;
  client::FanoutOptions options;
  options.shards = 6;
  options.timeout = std::chrono::seconds(60);
  options.keepalive = keepalive;
  options.on_progress = [&](const client::FanoutProgress& progress) {
    if (progress.replica == target && progress.progress.phase() == v1::AUDIT_PHASE_MEASURED &&
        !signalled.exchange(true)) {
      servers[victim]->Signal(signal);
    }
  };
  options.on_notice = [&](const std::string& line) {
    std::lock_guard<std::mutex> lock(mu);
    run.notices.push_back(line);
  };
  const auto start = std::chrono::steady_clock::now();
  run.result = client::RunFannedOutAudit(replicas, Audit(), options);
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  run.signalled = signalled.load();
  return run;
}

// Kills replica 2; the other tests use replicas 0 and 1 only (any order),
// and the frozen-replica test replica 3.
TEST_F(FanoutIntegrationTest, AReplicaKilledMidwayLeavesTheReportUnchanged) {
  ASSERT_GT(single_->conditions(0).memorized(), 0);  // the reference judges something
  ASSERT_EQ(single_->total_samples(), 96);
  const std::string victim = servers_[2]->target();
  const VictimRun run = RunWithVictim(servers_, 2, SIGKILL, client::Client::kDefaultKeepalive);
  ASSERT_TRUE(run.result.ok()) << run.result.status();
  ASSERT_TRUE(run.signalled) << "replica 2 never reported progress";
  ASSERT_FALSE(run.notices.empty());
  for (const std::string& notice : run.notices) {
    EXPECT_NE(notice.find("on " + victim + " failed (UNAVAILABLE"), std::string::npos) << notice;
  }
  ASSERT_EQ(run.result->jobs.size(), 6u);
  for (const std::string& job : run.result->jobs) {
    EXPECT_EQ(job.find(victim), std::string::npos) << job;  // finished elsewhere
  }
  ExpectSameAsOneServer(run.result->report);
}

// A replica frozen mid-audit (SIGSTOP) kept its TCP connections open, so
// the watch waited for ever (186 s and counting). Keepalive pings now find
// it silent: its shards move to the others and the report is unchanged.
TEST_F(FanoutIntegrationTest, AFrozenReplicaIsLeftAfterItsKeepalive) {
  const std::string victim = servers_[3]->target();
  const VictimRun run = RunWithVictim(servers_, 3, SIGSTOP, std::chrono::seconds(2));
  servers_[3]->Signal(SIGCONT);  // the suite's teardown stops it as it stops the others
  ASSERT_TRUE(run.result.ok()) << run.result.status();
  ASSERT_TRUE(run.signalled) << "replica 3 never reported progress";
  EXPECT_LT(run.seconds, 90.0);
  ASSERT_FALSE(run.notices.empty());
  for (const std::string& notice : run.notices) {
    EXPECT_NE(notice.find("on " + victim + " failed (UNAVAILABLE"), std::string::npos) << notice;
  }
  for (const std::string& job : run.result->jobs) {
    EXPECT_EQ(job.find(victim), std::string::npos) << job;
  }
  ExpectSameAsOneServer(run.result->report);
}

TEST_F(FanoutIntegrationTest, CliFanOutPrintsTheOneServerReport) {
  const testing::CommandResult one =
      Cli(servers_[0]->target(), absl::StrCat(kAuditArgs, " --json --quiet --fail-on never"));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const std::string both = absl::StrCat("ipv4:", servers_[0]->target(), ",", servers_[1]->target());
  const testing::CommandResult fanned =
      Cli(both, absl::StrCat(kAuditArgs, " --shards 4 --json --quiet --fail-on never"));
  ASSERT_EQ(fanned.exit_code, 0) << fanned.output;
  EXPECT_EQ(Comparable(fanned.output), Comparable(one.output));
  // "ADDRESS/ID" of each shard's job: both replicas took shards.
  const std::string jobs = nlohmann::json::parse(fanned.output)["job_id"];
  for (int r = 0; r < 2; ++r) {
    EXPECT_NE(jobs.find(servers_[r]->target() + "/audit"), std::string::npos) << jobs;
  }
  // Each of them is what `get` takes, whatever --server says.
  const std::vector<std::string> shard_jobs = absl::StrSplit(jobs, ',');
  ASSERT_EQ(shard_jobs.size(), 4u) << jobs;
  for (const std::string& job : shard_jobs) {
    const testing::CommandResult got = Cli("127.0.0.1:1", "get --json " + job);
    ASSERT_EQ(got.exit_code, 0) << got.output;
    const nlohmann::json report = nlohmann::json::parse(got.output);
    EXPECT_EQ(report["job_id"], job.substr(job.rfind('/') + 1));
    EXPECT_EQ(report["model"], "pm");
  }
  // The gate reads the merged verdict.
  EXPECT_EQ(Cli(both, absl::StrCat(kAuditArgs, " --quiet > /dev/null")).exit_code, 3);
}

TEST_F(FanoutIntegrationTest, MergeOfBatchShardsIsTheOneServerReport) {
  const testing::CommandResult one =
      Cli(servers_[0]->target(), absl::StrCat(kAuditArgs, " --json --quiet --fail-on never"));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  std::vector<std::string> files;
  for (int i = 0; i < 3; ++i) {
    files.push_back(scratch_->Join(absl::StrCat("shard", i, ".json")));
    // Shard reports are no gate (exit 0 although class 0 memorizes).
    const testing::CommandResult shard = testing::RunShell(
        absl::StrCat(MEMAUDIT_CLI_BINARY, " --server ", servers_[i % 2]->target(), " ", kAuditArgs,
                     " --shard-index ", i, " --shard-count 3 --json --quiet > ", files.back()));
    ASSERT_EQ(shard.exit_code, 0) << shard.output;
  }
  const std::string all = absl::StrCat(files[2], " ", files[0], " ", files[1]);
  const testing::CommandResult merged = testing::RunShell(
      absl::StrCat(MEMAUDIT_CLI_BINARY, " merge ", all, " --json --fail-on never"));
  ASSERT_EQ(merged.exit_code, 0) << merged.output;
  EXPECT_EQ(Comparable(merged.output), Comparable(one.output));
  // The gate, and the errors: a missing shard, a file that is no shard.
  EXPECT_EQ(testing::RunShell(absl::StrCat(MEMAUDIT_CLI_BINARY, " merge ", all, " > /dev/null"))
                .exit_code,
            3);
  const testing::CommandResult missing = testing::RunShell(
      absl::StrCat(MEMAUDIT_CLI_BINARY, " merge ", files[0], " ", files[2], " 2>&1"));
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("shard(s) 1 of 3 missing"), std::string::npos) << missing.output;
  EXPECT_NE(missing.output.find(files[0]), std::string::npos) << missing.output;
  const std::string whole = scratch_->Join("whole.json");
  testing::WriteFile(whole, one.output);
  const testing::CommandResult not_shard = testing::RunShell(
      absl::StrCat(MEMAUDIT_CLI_BINARY, " merge ", files[0], " ", whole, " 2>&1"));
  EXPECT_EQ(not_shard.exit_code, 1);
  EXPECT_NE(not_shard.output.find(whole + ": not the --json report of a shard"), std::string::npos)
      << not_shard.output;
  // An index past the split is refused, naming the range.
  const testing::CommandResult past =
      Cli(servers_[0]->target(), absl::StrCat(kAuditArgs, " --shard-index 80 --shard-count 90"));
  EXPECT_EQ(past.exit_code, 1);
  // 90 asked for, 12 made: 2 classes of 6 batches each.
  EXPECT_NE(past.output.find("splits into shards 0..11"), std::string::npos) << past.output;
}

// A replica that serves another version of the model (another checksum) is
// found before any work: the audit is refused and no job is submitted.
TEST_F(FanoutIntegrationTest, ReplicasWithDifferentModelFilesAreRefusedBeforeAnyWork) {
  const std::string repository = scratch_->Join("other-models");
  ASSERT_TRUE(testing::WriteMixtureDirectory(repository, "pm",
                                             testing::PointMassAndBroadClasses(32, kClasses + 1),
                                             v1::NoiseSchedule::LINEAR, v1::EPSILON, kClasses + 1)
                  .ok());
  const std::string dir = scratch_->Join("other-replica");
  std::filesystem::create_directories(dir);
  ServerProcess other(MEMAUDIT_SERVER_BINARY, repository, dir);
  ASSERT_GT(other.grpc_port(), 0) << other.Log();
  ASSERT_TRUE(WaitUntilServing(other)) << other.Log();
  Client first(servers_[0]->target(), std::chrono::seconds(30));
  const int jobs_before = first.ListAudits()->jobs_size();
  const testing::CommandResult result =
      Cli(absl::StrCat(servers_[0]->target(), ",", other.target()),
          "audit --model pm --class 0 --samples 2 --quiet");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("replicas serve different versions of model \"pm\""),
            std::string::npos)
      << result.output;
  Client second(other.target(), std::chrono::seconds(30));
  EXPECT_EQ(second.ListAudits()->jobs_size(), 0);
  EXPECT_EQ(first.ListAudits()->jobs_size(), jobs_before);
}

TEST_F(FanoutIntegrationTest, CtrlCCancelsEveryShardsJob) {
  const std::string both = absl::StrCat(servers_[0]->target(), ",", servers_[1]->target());
  const testing::CommandResult interrupted = testing::RunShell(absl::StrCat(
      MEMAUDIT_CLI_BINARY, " --server ", both,
      " audit --model pm --class 2 --class 3 --samples 100000 --seed 77 --quiet 2>&1 & pid=$!; "
      "sleep 2; kill -INT $pid; wait $pid; echo \"exit $?\""));
  EXPECT_NE(interrupted.output.find("exit 130"), std::string::npos) << interrupted.output;
  // A cancelled job ends when its worker next checks (between sampling
  // steps): on a loaded machine that can come after the CLI has exited.
  std::vector<v1::AuditJob> shard_jobs;
  for (int attempt = 0; attempt < 100; ++attempt) {
    shard_jobs.clear();
    for (int r = 0; r < 2; ++r) {
      Client one(servers_[r]->target(), std::chrono::seconds(10));
      absl::StatusOr<v1::ListAuditsResponse> jobs = one.ListAudits();
      ASSERT_TRUE(jobs.ok()) << jobs.status();
      for (const v1::AuditJob& job : jobs->jobs()) {
        if (job.request().seed() == 77) shard_jobs.push_back(job);
      }
    }
    const bool settled = std::none_of(shard_jobs.begin(), shard_jobs.end(), [](const auto& job) {
      return job.state() == v1::JOB_RUNNING || job.state() == v1::JOB_QUEUED;
    });
    if (settled) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(shard_jobs.size(), 2u);  // one class each
  for (const v1::AuditJob& job : shard_jobs) {
    EXPECT_EQ(job.state(), v1::JOB_CANCELLED) << job.id();
  }
}

// A shard whose watch fails (this replica allows one watch stream, the
// fan-out opens one per shard) ends the audit with that error, and the job
// it leaves is cancelled with the others: it used to run to the end for
// nobody.
TEST_F(FanoutIntegrationTest, AShardWhoseWatchFailsHasItsJobCancelled) {
  const std::string dir = scratch_->Join("narrow-replica");
  std::filesystem::create_directories(dir);
  ServerProcess narrow(MEMAUDIT_SERVER_BINARY, scratch_->Join("models"), dir,
                       {"--max_watch_streams=1"});
  ASSERT_GT(narrow.grpc_port(), 0) << narrow.Log();
  ASSERT_TRUE(WaitUntilServing(narrow)) << narrow.Log();
  const testing::CommandResult result =
      Cli(narrow.target(),
          "audit --model pm --class 0 --class 1 --samples 100000 --seed 91 --shards 2 --quiet");
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("RESOURCE_EXHAUSTED"), std::string::npos) << result.output;
  Client client(narrow.target(), std::chrono::seconds(10));
  std::vector<v1::AuditJob> jobs;
  for (int attempt = 0; attempt < 100; ++attempt) {  // a cancel lands at the next step
    absl::StatusOr<v1::ListAuditsResponse> listed = client.ListAudits();
    ASSERT_TRUE(listed.ok()) << listed.status();
    jobs.assign(listed->jobs().begin(), listed->jobs().end());
    const bool settled = std::none_of(jobs.begin(), jobs.end(), [](const auto& job) {
      return job.state() == v1::JOB_RUNNING || job.state() == v1::JOB_QUEUED;
    });
    if (settled) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(jobs.size(), 2u);
  for (const v1::AuditJob& job : jobs) EXPECT_EQ(job.state(), v1::JOB_CANCELLED) << job.id();
}

}  // namespace
}  // namespace memaudit
