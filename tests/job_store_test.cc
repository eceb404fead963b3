// The durable job store alone: round trips of jobs, batches and conditions,
// the directory lock, corrupt and unusable directories, and a write that
// hits a file-size limit (a full disk) failing cleanly.
#include "server/job_store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <filesystem>
#include <fstream>

#include "google/protobuf/util/message_differencer.h"
#include "tests/test_util.h"

namespace memaudit::server {
namespace {

using google::protobuf::util::MessageDifferencer;

v1::AuditJob NewJob(const std::string& id) {
  v1::AuditJob job;
  job.set_id(id);
  job.set_state(v1::JOB_QUEUED);
  job.set_owner("ci");
  job.set_created_unix_ms(1700000000000);
  job.mutable_request()->set_model("mix");
  job.mutable_request()->add_conditions()->set_prompt("a photo of a cat");
  job.mutable_request()->add_conditions()->set_class_label(3);
  job.mutable_request()->set_samples_per_condition(12);
  job.mutable_progress()->set_samples_total(24);
  return job;
}

std::vector<v1::SampleReport> Samples(int64_t first, int64_t count) {
  std::vector<v1::SampleReport> samples(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    samples[i].set_seed(static_cast<uint64_t>(100 + first + i));
    samples[i].set_verdict((first + i) % 2 == 0 ? v1::MEMORIZED : v1::NOT_MEMORIZED);
    samples[i].mutable_summary()->set_max_kappa(-0.5 - static_cast<double>(first + i));
  }
  return samples;
}

class JobStoreTest : public ::testing::Test {
 protected:
  std::string Dir() const { return scratch_.Join("state"); }
  testing::ScratchDir scratch_;
};

TEST_F(JobStoreTest, JobsBatchesAndConditionsSurviveReopening) {
  {
    auto store = JobStore::Open(Dir());
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->Insert(NewJob("audit-a"), 1, "sha256:aa").ok());
    ASSERT_TRUE((*store)->Insert(NewJob("audit-b"), 2, "sha256:bb").ok());
    v1::AuditProgress progress;
    progress.set_samples_done(8);
    ASSERT_TRUE((*store)->AddBatch("audit-a", 0, 0, Samples(0, 8), progress).ok());
    progress.set_samples_done(12);
    ASSERT_TRUE((*store)->AddBatch("audit-a", 0, 8, Samples(8, 4), progress).ok());
    v1::ConditionReport condition;
    condition.set_label("a photo of a cat");
    condition.set_verdict(v1::MEMORIZED);
    *condition.add_samples() = Samples(0, 1)[0];  // not stored: batches hold samples
    progress.mutable_timing()->set_total_seconds(3.5);
    ASSERT_TRUE((*store)->AddCondition("audit-a", 0, condition, progress).ok());
    ASSERT_TRUE((*store)->AddBatch("audit-a", 1, 0, Samples(0, 8), progress).ok());
    progress.set_samples_done(20);
    progress.mutable_timing()->set_total_seconds(4.25);
    progress.mutable_timing()->set_sampling_seconds(1.5);
    ASSERT_TRUE((*store)->AddCondition("audit-a", 1, condition, progress).ok());
    v1::AuditJob finished = NewJob("audit-b");
    finished.set_state(v1::JOB_FAILED);
    finished.set_error("boom");
    ASSERT_TRUE((*store)->UpdateState(finished).ok());
    EXPECT_GT((*store)->bytes(), 0);
  }
  auto store = JobStore::Open(Dir());
  ASSERT_TRUE(store.ok()) << store.status();
  auto jobs = (*store)->LoadAll();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 2u);
  const StoredJob& a = (*jobs)[0];
  EXPECT_EQ(a.sequence, 1u);
  EXPECT_EQ(a.model_checksum, "sha256:aa");
  EXPECT_TRUE(MessageDifferencer::Equals(a.job.request(), NewJob("audit-a").request()));
  // The progress of the last write (a finished condition), its timing too.
  EXPECT_EQ(a.job.progress().samples_done(), 20);
  EXPECT_EQ(a.job.progress().timing().total_seconds(), 4.25);
  EXPECT_EQ(a.job.progress().timing().sampling_seconds(), 1.5);
  ASSERT_EQ(a.samples.at(0).size(), 12u);
  for (int64_t i = 0; i < 12; ++i) {
    EXPECT_TRUE(MessageDifferencer::Equals(a.samples.at(0)[i], Samples(i, 1)[0])) << i;
  }
  EXPECT_EQ(a.samples.at(1).size(), 8u);
  ASSERT_EQ(a.conditions.count(0), 1u);
  ASSERT_EQ(a.conditions.count(1), 1u);
  EXPECT_EQ(a.conditions.at(0).label(), "a photo of a cat");
  EXPECT_EQ(a.conditions.at(0).samples_size(), 0);
  EXPECT_EQ((*jobs)[1].job.state(), v1::JOB_FAILED);
  EXPECT_EQ((*jobs)[1].job.error(), "boom");
  EXPECT_EQ((*jobs)[1].job.request().model(), "mix");  // UpdateState keeps the request

  ASSERT_TRUE((*store)->Delete("audit-a").ok());
  jobs = (*store)->LoadAll();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].job.id(), "audit-b");
}

TEST_F(JobStoreTest, ASecondOpenOfTheDirectoryIsRefused) {
  auto first = JobStore::Open(Dir());
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = JobStore::Open(Dir());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("in use by another memaudit-server (pid "),
            std::string::npos)
      << second.status();
  first->reset();  // released with the store
  EXPECT_TRUE(JobStore::Open(Dir()).ok());
}

TEST_F(JobStoreTest, ACorruptDatabaseIsNamedAtOpen) {
  std::filesystem::create_directories(Dir());
  testing::WriteFile(Dir() + "/jobs.sqlite", std::string(8192, 'x'));
  auto store = JobStore::Open(Dir());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("jobs.sqlite"), std::string::npos) << store.status();
  EXPECT_NE(store.status().message().find("move"), std::string::npos) << store.status();
}

TEST_F(JobStoreTest, ADamagedPageIsFoundByTheIntegrityCheck) {
  {
    auto store = JobStore::Open(Dir());
    ASSERT_TRUE(store.ok());
    for (int j = 0; j < 20; ++j) {
      ASSERT_TRUE((*store)->Insert(NewJob("audit-" + std::to_string(j)), j + 1, "x").ok());
      ASSERT_TRUE((*store)->AddBatch("audit-" + std::to_string(j), 0, 0, Samples(0, 8), {}).ok());
    }
  }
  // Checkpoint the log into the file (a clean close does), then overwrite
  // the middle of the file: the header stays valid, a b-tree page does not.
  const std::string path = Dir() + "/jobs.sqlite";
  const auto size = std::filesystem::file_size(path);
  ASSERT_GT(size, 4u * 4096u);
  {
    std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(2 * 4096));
    const std::string garbage(4096, '\x5a');
    file.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
  }
  auto store = JobStore::Open(Dir());
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("jobs.sqlite"), std::string::npos) << store.status();
}

TEST_F(JobStoreTest, ADirectoryThatCannotBeCreatedIsNamed) {
  testing::WriteFile(scratch_.Join("a-file"), "not a directory\n");
  auto store = JobStore::Open(scratch_.Join("a-file/state"));
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("--state_dir " + scratch_.Join("a-file/state")),
            std::string::npos)
      << store.status();
  EXPECT_NE(store.status().message().find("cannot create"), std::string::npos) << store.status();
}

// A full disk, as a file-size limit: the write fails with UNAVAILABLE naming
// the store, nothing of the batch is kept, and the store still works once
// there is room again.
// The log's file kept its largest size (48 MB after two 16,000-sample
// audits, and after a clean shutdown); now it is truncated after checkpoints
// and emptied at close.
TEST_F(JobStoreTest, TheWriteAheadLogStaysBoundedAndIsEmptiedAtClose) {
  const std::string log = Dir() + "/jobs.sqlite-wal";
  {
    auto store = JobStore::Open(Dir());
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->Insert(NewJob("audit-a"), 1, "x").ok());
    // One large batch (~12 MB in one transaction) grows the log past the
    // limit; the small batches after it checkpoint and reset it.
    auto batch_of = [](int64_t first, int64_t count, int profile) {
      std::vector<v1::SampleReport> samples = Samples(first, count);
      for (v1::SampleReport& sample : samples) {
        for (int k = 0; k < profile; ++k) sample.add_profile()->set_sigma(1.0 + k);
      }
      return samples;
    };
    ASSERT_TRUE((*store)->AddBatch("audit-a", 0, 0, batch_of(0, 40, 30000), {}).ok());
    for (int64_t batch = 0; batch < 40; ++batch) {
      ASSERT_TRUE(
          (*store)
              ->AddBatch("audit-a", 0, 40 + batch * 4, batch_of(40 + batch * 4, 4, 4000), {})
              .ok());
    }
    ASSERT_TRUE(std::filesystem::exists(log));
    EXPECT_LE(std::filesystem::file_size(log), JobStore::kMaxLogBytes + (1 << 20))
        << "the log outgrew its limit";
  }
  EXPECT_TRUE(!std::filesystem::exists(log) || std::filesystem::file_size(log) == 0)
      << std::filesystem::file_size(log) << " bytes of log left after close";
  auto reopened = JobStore::Open(Dir());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  auto jobs = (*reopened)->LoadAll();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_EQ((*jobs)[0].samples.at(0).size(), 200u);  // nothing lost
}

TEST_F(JobStoreTest, AWriteBeyondTheFileSizeLimitFailsAndLeavesTheStoreUsable) {
  auto store = JobStore::Open(Dir());
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Insert(NewJob("audit-a"), 1, "x").ok());
  const std::vector<v1::SampleReport> first = Samples(0, 8);
  ASSERT_TRUE((*store)->AddBatch("audit-a", 0, 0, first, {}).ok());

  // One large batch that cannot fit under the limit.
  std::vector<v1::SampleReport> large = Samples(8, 8);
  for (v1::SampleReport& sample : large) {
    for (int k = 0; k < 2000; ++k) sample.add_profile()->set_sigma(1.0 + k);
  }
  struct sigaction ignore = {}, previous = {};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGXFSZ, &ignore, &previous);
  rlimit saved;
  getrlimit(RLIMIT_FSIZE, &saved);
  rlimit limited = saved;
  limited.rlim_cur = static_cast<rlim_t>((*store)->bytes() + 64 * 1024);
  setrlimit(RLIMIT_FSIZE, &limited);
  const absl::Status full = (*store)->AddBatch("audit-a", 0, 8, large, {});
  setrlimit(RLIMIT_FSIZE, &saved);
  sigaction(SIGXFSZ, &previous, nullptr);

  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(full.message().find("jobs.sqlite"), std::string::npos) << full;
  auto jobs = (*store)->LoadAll();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].samples.at(0).size(), 8u);  // the failed batch left nothing
  EXPECT_TRUE((*store)->AddBatch("audit-a", 0, 8, Samples(8, 8), {}).ok());
}

}  // namespace
}  // namespace memaudit::server
