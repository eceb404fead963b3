// The job manager with a real registry and exact mixture models, no gRPC:
// verdicts of a known copy, the event log against the report, cancellation,
// the queue bound, the size cap on finished jobs, and jobs pinned to the
// model version they were planned on.
#include "server/job_manager.h"

#include <gtest/gtest.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/job_store.h"
#include "server/metrics.h"
#include "server/request_memory.h"
#include "tests/server_fixture.h"
#include "tests/test_util.h"

namespace memaudit::server {
namespace {

constexpr absl::Duration kWait = absl::Seconds(120);

v1::AuditRequest ClassAudit(std::initializer_list<int64_t> classes, int64_t samples) {
  v1::AuditRequest request;
  request.set_model("classes");
  for (int64_t c : classes) request.add_conditions()->set_class_label(c);
  request.set_samples_per_condition(samples);
  request.mutable_sampling()->set_num_steps(10);
  return request;
}

// An audit long enough to be cancelled or to hold a worker.
v1::AuditRequest LongAudit() {
  v1::AuditRequest request = ClassAudit({1}, kMaxSamplesPerCondition);
  request.mutable_sampling()->set_num_steps(1000);
  return request;
}

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_ = fixture_.NewRegistry();
    ASSERT_TRUE(registry_->Load("classes").ok());
  }
  std::unique_ptr<JobManager> NewManager(JobManagerOptions options = {}) {
    return std::make_unique<JobManager>(registry_.get(), &metrics_, options);
  }
  // Waits for the job to end and returns it.
  v1::AuditJob Finished(JobManager& jobs, const std::string& id) {
    auto job = jobs.Await(id, kWait);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : v1::AuditJob();
  }

  testing::ServerFixture fixture_;
  std::unique_ptr<ModelRegistry> registry_;
  Metrics metrics_;
};

// Every job, through the pages of List.
std::vector<v1::AuditJob> AllJobs(const JobManager& jobs) {
  std::vector<v1::AuditJob> all;
  JobManager::ListQuery query;
  do {
    auto page = jobs.List(query);
    EXPECT_TRUE(page.ok()) << page.status();
    if (!page.ok()) break;
    for (v1::AuditJob& job : page->jobs) all.push_back(std::move(job));
    query.page_token = page->next_page_token;
  } while (!query.page_token.empty());
  return all;
}

TEST_F(JobManagerTest, APointMassClassIsMemorizedAndABroadOneIsNot) {
  auto jobs = NewManager();
  auto submitted = jobs->Submit(ClassAudit({0, 1}, 3));
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  EXPECT_EQ(submitted->progress().samples_total(), 6);
  const v1::AuditJob job = Finished(*jobs, submitted->id());
  ASSERT_EQ(job.state(), v1::JOB_SUCCEEDED) << job.error();
  const v1::AuditReport& report = job.report();
  ASSERT_EQ(report.conditions_size(), 2);
  EXPECT_EQ(report.conditions(0).label(), "class 0");
  EXPECT_EQ(report.conditions(0).verdict(), v1::MEMORIZED);
  EXPECT_EQ(report.conditions(0).memorized(), 3);
  EXPECT_EQ(report.conditions(1).verdict(), v1::NOT_MEMORIZED);
  EXPECT_EQ(report.verdict(), v1::MEMORIZED);
  EXPECT_EQ(report.memorized_samples(), 3);
  EXPECT_EQ(report.total_samples(), 6);
  EXPECT_EQ(job.progress().phase(), v1::AUDIT_PHASE_DONE);
}

TEST_F(JobManagerTest, EventsCarryEachSampleOnceThenTheFinalJob) {
  auto jobs = NewManager();
  auto submitted = jobs->Submit(ClassAudit({2, 0}, 9));  // two batches per condition
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  const v1::AuditJob job = Finished(*jobs, submitted->id());
  ASSERT_EQ(job.state(), v1::JOB_SUCCEEDED) << job.error();
  bool finished = false;
  auto events = jobs->Events(job.id(), 0, absl::ZeroDuration(), &finished);
  ASSERT_TRUE(events.ok()) << events.status();
  EXPECT_TRUE(finished);
  std::vector<v1::SampleReport> samples;
  int64_t last_done = 0;
  bool saw_sampling = false, saw_curvature = false;
  for (size_t i = 0; i < events->size(); ++i) {
    const v1::AuditEvent& event = (*events)[i];
    if (event.has_sample()) samples.push_back(event.sample());
    if (event.has_progress()) {
      EXPECT_GE(event.progress().samples_done(), last_done);
      last_done = event.progress().samples_done();
      saw_sampling |= event.progress().phase() == v1::AUDIT_PHASE_SAMPLING;
      saw_curvature |= event.progress().phase() == v1::AUDIT_PHASE_CURVATURE;
    }
    EXPECT_EQ(event.has_finished(), i + 1 == events->size());
  }
  EXPECT_TRUE(saw_sampling);
  EXPECT_TRUE(saw_curvature);
  EXPECT_EQ(last_done, 18);
  ASSERT_EQ(samples.size(), 18u);
  size_t k = 0;
  for (const v1::ConditionReport& condition : job.report().conditions()) {
    for (const v1::SampleReport& sample : condition.samples()) {
      EXPECT_EQ(samples[k].SerializeAsString(), sample.SerializeAsString()) << "sample " << k;
      ++k;
    }
  }
  EXPECT_EQ(events->back().finished().report().SerializeAsString(),
            job.report().SerializeAsString());
  // Reading from the middle returns the rest.
  auto tail = jobs->Events(job.id(), events->size() - 1, absl::ZeroDuration(), &finished);
  ASSERT_TRUE(tail.ok());
  ASSERT_EQ(tail->size(), 1u);
  EXPECT_TRUE(tail->front().has_finished());
}

TEST_F(JobManagerTest, ListLeavesOutPerSampleReports) {
  auto jobs = NewManager();
  auto submitted = jobs->Submit(ClassAudit({0}, 2));
  ASSERT_TRUE(submitted.ok());
  const v1::AuditJob job = Finished(*jobs, submitted->id());
  ASSERT_EQ(job.report().conditions(0).samples_size(), 2);
  const std::vector<v1::AuditJob> list = AllJobs(*jobs);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].id(), job.id());
  EXPECT_EQ(list[0].report().verdict(), job.report().verdict());
  ASSERT_EQ(list[0].report().conditions_size(), 1);
  EXPECT_EQ(list[0].report().conditions(0).memorized(), 2);
  EXPECT_EQ(list[0].report().conditions(0).samples_size(), 0);
  EXPECT_EQ(list[0].request().model(), "classes");
}

// Pages of ListAudits: newest first, each job once, the owner filter
// applied before paging, bad tokens and sizes refused.
TEST_F(JobManagerTest, ListPagesNewestFirstAndFiltersByOwner) {
  JobManagerOptions options;
  options.max_queued_jobs = 8;
  auto jobs = NewManager(options);
  std::vector<std::string> ids;  // submission order
  for (int i = 0; i < 5; ++i) {
    auto job = jobs->Submit(ClassAudit({1}, 1), i % 2 == 0 ? "alice" : "bob");
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->owner(), i % 2 == 0 ? "alice" : "bob");
    ids.push_back(job->id());
  }
  auto pages_of = [&](std::optional<std::string> owner, int page_size) {
    std::vector<std::vector<std::string>> pages;
    JobManager::ListQuery query{owner, page_size, ""};
    do {
      auto page = jobs->List(query);
      EXPECT_TRUE(page.ok()) << page.status();
      if (!page.ok()) break;
      pages.emplace_back();
      for (const v1::AuditJob& job : page->jobs) pages.back().push_back(job.id());
      query.page_token = page->next_page_token;
    } while (!query.page_token.empty());
    return pages;
  };
  using Pages = std::vector<std::vector<std::string>>;
  EXPECT_EQ(pages_of(std::nullopt, 2), (Pages{{ids[4], ids[3]}, {ids[2], ids[1]}, {ids[0]}}));
  EXPECT_EQ(pages_of("alice", 2), (Pages{{ids[4], ids[2]}, {ids[0]}}));
  EXPECT_EQ(pages_of("bob", 0), (Pages{{ids[3], ids[1]}}));
  EXPECT_EQ(pages_of("carol", 0), (Pages{{}}));
  EXPECT_EQ(jobs->List({std::nullopt, 1001, ""}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(jobs->List({std::nullopt, -1, ""}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(jobs->List({std::nullopt, 0, "audit-12"}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(JobManagerTest, CancelEndsQueuedJobsAtOnceAndRunningOnesSoon) {
  JobManagerOptions options;
  options.max_concurrent_jobs = 1;
  auto jobs = NewManager(options);
  auto running = jobs->Submit(LongAudit());
  auto queued = jobs->Submit(LongAudit());
  ASSERT_TRUE(running.ok() && queued.ok());
  auto cancelled = jobs->Cancel(queued->id());
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->state(), v1::JOB_CANCELLED);
  ASSERT_TRUE(jobs->Cancel(running->id()).ok());
  const v1::AuditJob stopped = Finished(*jobs, running->id());
  EXPECT_EQ(stopped.state(), v1::JOB_CANCELLED);
  EXPECT_FALSE(stopped.has_report());
  EXPECT_EQ(jobs->gauges().queued + jobs->gauges().running, 0);
}

TEST_F(JobManagerTest, AFullQueueRefusesWithResourceExhausted) {
  JobManagerOptions options;
  options.max_concurrent_jobs = 1;
  options.max_queued_jobs = 1;
  auto jobs = NewManager(options);
  auto first = jobs->Submit(LongAudit());
  auto second = jobs->Submit(LongAudit());
  ASSERT_TRUE(first.ok() && second.ok());
  auto third = jobs->Submit(LongAudit());
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted) << third.status();
  ASSERT_TRUE(jobs->Cancel(first->id()).ok());
  ASSERT_TRUE(jobs->Cancel(second->id()).ok());
}

TEST_F(JobManagerTest, TheSizeCapEvictsTheOldestFinishedJobAndCountsIt) {
  JobManagerOptions options;
  options.max_finished_job_bytes = 1;  // every job is over: only the newest stays
  auto jobs = NewManager(options);
  auto first = jobs->Submit(ClassAudit({1}, 1));
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(Finished(*jobs, first->id()).state(), v1::JOB_SUCCEEDED);
  EXPECT_EQ(jobs->gauges().finished, 1);
  auto second = jobs->Submit(ClassAudit({1}, 1));
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(Finished(*jobs, second->id()).state(), v1::JOB_SUCCEEDED);
  EXPECT_EQ(jobs->Get(first->id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(jobs->Get(second->id()).ok());
  const JobGauges gauges = jobs->gauges();
  EXPECT_EQ(gauges.finished, 1);
  EXPECT_GT(gauges.finished_bytes, 0);
  EXPECT_NE(metrics_.Scrape().find("memaudit_jobs_evicted_total 1"), std::string::npos);
}

// A watcher holding a job reads it to the end even when the history caps
// evict it meanwhile.
TEST_F(JobManagerTest, AHeldJobStaysReadableAfterEviction) {
  JobManagerOptions options;
  options.max_finished_job_bytes = 1;
  auto jobs = NewManager(options);
  auto first = jobs->Submit(ClassAudit({0}, 2));
  ASSERT_TRUE(first.ok());
  auto held = jobs->Find(first->id());
  ASSERT_TRUE(held.ok());
  ASSERT_EQ(Finished(*jobs, first->id()).state(), v1::JOB_SUCCEEDED);
  auto second = jobs->Submit(ClassAudit({1}, 1));
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(Finished(*jobs, second->id()).state(), v1::JOB_SUCCEEDED);
  ASSERT_EQ(jobs->Get(first->id()).status().code(), absl::StatusCode::kNotFound);  // evicted
  bool finished = false;
  const std::vector<v1::AuditEvent> events =
      jobs->Events(*held, 0, absl::ZeroDuration(), &finished);
  EXPECT_TRUE(finished);
  ASSERT_FALSE(events.empty());
  EXPECT_TRUE(events.back().has_finished());
  EXPECT_EQ(events.back().finished().report().conditions(0).samples_size(), 2);
  int samples = 0;
  for (const v1::AuditEvent& event : events) samples += event.has_sample();
  EXPECT_EQ(samples, 2);
}

TEST_F(JobManagerTest, TheCountCapKeepsTheNewest) {
  JobManagerOptions options;
  options.max_finished_jobs_kept = 2;
  auto jobs = NewManager(options);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto job = jobs->Submit(ClassAudit({1}, 1));
    ASSERT_TRUE(job.ok());
    ASSERT_EQ(Finished(*jobs, job->id()).state(), v1::JOB_SUCCEEDED);
    ids.push_back(job->id());
  }
  EXPECT_FALSE(jobs->Get(ids[0]).ok());
  EXPECT_TRUE(jobs->Get(ids[1]).ok());
  EXPECT_TRUE(jobs->Get(ids[2]).ok());
  EXPECT_EQ(AllJobs(*jobs).size(), 2u);
}

TEST_F(JobManagerTest, AJobAuditsTheModelVersionItWasPlannedOn) {
  JobManagerOptions options;
  options.max_concurrent_jobs = 1;
  auto jobs = NewManager(options);
  auto blocker = jobs->Submit(LongAudit());
  auto job = jobs->Submit(ClassAudit({0}, 2));
  ASSERT_TRUE(blocker.ok() && job.ok());
  ASSERT_TRUE(registry_->Unload("classes").ok());  // while the job is queued
  ASSERT_TRUE(jobs->Cancel(blocker->id()).ok());
  const v1::AuditJob done = Finished(*jobs, job->id());
  ASSERT_EQ(done.state(), v1::JOB_SUCCEEDED) << done.error();
  EXPECT_EQ(done.report().verdict(), v1::MEMORIZED);
  // New submissions see the unload.
  EXPECT_EQ(jobs->Submit(ClassAudit({0}, 1)).status().code(), absl::StatusCode::kUnavailable);
}

// A caller whose deadline passes once its request is planned never learns
// the job's id: Submit returns the stop's status and creates nothing.
TEST_F(JobManagerTest, ACallerGoneAfterPlanningGetsNoJob) {
  auto jobs = NewManager();
  const v1::AuditRequest request = ClassAudit({0}, 1);
  int planning_calls = 0;
  ASSERT_TRUE(PlanAudit(request, *registry_->Get("classes"), [&planning_calls] {
                ++planning_calls;
                return absl::OkStatus();
              }).ok());
  int calls = 0;
  auto submitted = jobs->Submit(request, "", [&]() -> absl::Status {
    return ++calls > planning_calls ? absl::DeadlineExceededError("deadline passed")
                                    : absl::OkStatus();
  });
  EXPECT_EQ(submitted.status().code(), absl::StatusCode::kDeadlineExceeded) << submitted.status();
  EXPECT_TRUE(AllJobs(*jobs).empty());
}

TEST_F(JobManagerTest, BadRequestsAndUnknownIdsAreRefused) {
  auto jobs = NewManager();
  v1::AuditRequest no_model = ClassAudit({0}, 1);
  no_model.clear_model();
  EXPECT_EQ(jobs->Submit(no_model).status().code(), absl::StatusCode::kInvalidArgument);
  v1::AuditRequest unknown = ClassAudit({0}, 1);
  unknown.set_model("nope");
  EXPECT_EQ(jobs->Submit(unknown).status().code(), absl::StatusCode::kNotFound);
  v1::AuditRequest bad = ClassAudit({7}, 1);
  auto refused = jobs->Submit(bad);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("conditions[0]"), std::string::npos);
  EXPECT_TRUE(AllJobs(*jobs).empty());
  bool finished = false;
  EXPECT_EQ(jobs->Get("audit-0").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(jobs->Cancel("audit-0").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(jobs->Events("audit-0", 0, absl::ZeroDuration(), &finished).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(JobManagerTest, ShutdownCancelsWhatIsLeftAndRefusesNewJobs) {
  JobManagerOptions options;
  options.max_concurrent_jobs = 1;
  auto jobs = NewManager(options);
  auto running = jobs->Submit(LongAudit());
  auto queued = jobs->Submit(LongAudit());
  ASSERT_TRUE(running.ok() && queued.ok());
  jobs->Shutdown(absl::ZeroDuration());
  EXPECT_EQ(jobs->Get(running->id())->state(), v1::JOB_CANCELLED);
  EXPECT_EQ(jobs->Get(queued->id())->state(), v1::JOB_CANCELLED);
  EXPECT_EQ(jobs->Submit(ClassAudit({0}, 1)).status().code(), absl::StatusCode::kUnavailable);
}

// Durable jobs (job_store.h): a job stopped half-way by a shutdown resumes
// in a new manager on the same store from its last finished batch, and its
// report equals an uninterrupted run's.
class DurableJobsTest : public JobManagerTest {
 protected:
  std::unique_ptr<JobStore> OpenStore() {
    auto store = JobStore::Open(scratch_.Join("state"));
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }
  std::unique_ptr<JobManager> NewDurableManager(JobStore* store, JobManagerOptions options = {}) {
    return std::make_unique<JobManager>(registry_.get(), &metrics_, options, store);
  }
  // Three classes of 48 samples (six batches each).
  static v1::AuditRequest ThreeClasses() {
    v1::AuditRequest request = ClassAudit({0, 1, 2}, 48);
    request.mutable_sampling()->set_num_steps(50);
    request.set_seed(41);
    return request;
  }
  // The report of an uninterrupted run without a store, timing cleared.
  v1::AuditReport Uninterrupted(const v1::AuditRequest& request) {
    auto jobs = NewManager();
    auto submitted = jobs->Submit(request);
    EXPECT_TRUE(submitted.ok()) << submitted.status();
    v1::AuditReport report = Finished(*jobs, submitted->id()).report();
    report.clear_timing();
    return report;
  }
  testing::ScratchDir scratch_;
};

// Network calls that go ahead only as the test grants them (the registry's
// forward observer waits here), so a test can stop an audit half-way
// however fast the machine is.
class CallGate {
 public:
  // After every network call.
  void Pass() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(this, &CallGate::CanPass));
    if (!open_) --permits_;
  }
  void Grant(int64_t calls) {
    absl::MutexLock lock(&mu_);
    permits_ += calls;
  }
  void Open() {
    absl::MutexLock lock(&mu_);
    open_ = true;
  }
  void Close() {
    absl::MutexLock lock(&mu_);
    open_ = false;
    permits_ = 0;
  }

 private:
  bool CanPass() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return open_ || permits_ > 0; }

  absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = true;
  int64_t permits_ ABSL_GUARDED_BY(mu_) = 0;
};

TEST_F(DurableJobsTest, AnInterruptedAuditResumesAndEqualsAnUninterruptedOne) {
  CallGate gate;
  registry_ = fixture_.NewRegistry({}, ModelRegistry::kDefaultLoadTimeout,
                                   [&gate](int64_t, bool) { gate.Pass(); });
  ASSERT_TRUE(registry_->Load("classes").ok());
  const v1::AuditRequest request = ThreeClasses();
  std::string id;
  int64_t done_before = 0;
  {
    std::unique_ptr<JobStore> store = OpenStore();
    ASSERT_NE(store, nullptr);
    auto jobs = NewDurableManager(store.get());
    gate.Close();
    auto submitted = jobs->Submit(request);
    ASSERT_TRUE(submitted.ok()) << submitted.status();
    id = submitted->id();
    // Past the first condition (48), then no more calls: the job waits at
    // the gate within 10 calls (a batch takes 50 sampling steps), well
    // before the end (144).
    for (int i = 0; i < 100000 && done_before < 56; ++i) {
      gate.Grant(10);
      absl::SleepFor(absl::Milliseconds(2));
      done_before = jobs->Get(id)->progress().samples_done();
    }
    ASSERT_GE(done_before, 56);
    // The shutdown cancels the job; the gate then lets its waiting call
    // return into the cancelled loop.
    std::thread shutdown([&jobs] { jobs->Shutdown(absl::ZeroDuration()); });
    absl::SleepFor(absl::Milliseconds(100));
    gate.Open();
    shutdown.join();
    const v1::AuditJob stopped = *jobs->Get(id);
    ASSERT_EQ(stopped.state(), v1::JOB_CANCELLED);
    EXPECT_NE(stopped.error().find("resumes when a server starts"), std::string::npos)
        << stopped.error();
    done_before = stopped.progress().samples_done();
    ASSERT_LT(done_before, 144) << "the audit ended before the shutdown";
  }
  std::unique_ptr<JobStore> store = OpenStore();
  ASSERT_NE(store, nullptr);
  auto jobs = NewDurableManager(store.get());
  auto to_resume = jobs->Restore();
  ASSERT_TRUE(to_resume.ok()) << to_resume.status();
  EXPECT_EQ(*to_resume, 1);
  const v1::AuditJob restored = *jobs->Get(id);
  EXPECT_EQ(restored.state(), v1::JOB_QUEUED);
  EXPECT_EQ(restored.resumed(), 1);
  // Only whole batches are kept, and at most the batch in flight is lost.
  const int64_t reused = restored.progress().samples_done();
  EXPECT_EQ(reused % kAuditSamplesPerBatch, 0);
  EXPECT_GE(reused, done_before - kAuditSamplesPerBatch);
  EXPECT_LE(reused, done_before);
  jobs->ResumeInterrupted();
  const v1::AuditJob resumed = Finished(*jobs, id);
  ASSERT_EQ(resumed.state(), v1::JOB_SUCCEEDED) << resumed.error();
  v1::AuditReport report = resumed.report();
  report.clear_timing();
  const v1::AuditReport expected = Uninterrupted(request);
  std::string difference;
  google::protobuf::util::MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&difference);
  EXPECT_TRUE(differencer.Compare(expected, report)) << difference;
  // A watcher from the start sees every sample once, in report order.
  bool finished = false;
  std::vector<v1::SampleReport> watched;
  for (const v1::AuditEvent& event : jobs->Events(*jobs->Find(id), 0, kWait, &finished)) {
    if (event.has_sample()) watched.push_back(event.sample());
  }
  ASSERT_EQ(watched.size(), 144u);
  EXPECT_EQ(watched[64].seed(), report.conditions(1).samples(16).seed());
}

// Jobs a shutdown stops (one running, two queued) stay in the store even
// when the history keeps one finished job, and all resume after a restart
// whose queue admits no new work: they were accepted before it.
TEST_F(DurableJobsTest, JobsStoppedByAShutdownSurviveTheHistoryCapAndAFullQueue) {
  CallGate gate;
  registry_ = fixture_.NewRegistry({}, ModelRegistry::kDefaultLoadTimeout,
                                   [&gate](int64_t, bool) { gate.Pass(); });
  ASSERT_TRUE(registry_->Load("classes").ok());
  JobManagerOptions options;
  options.max_concurrent_jobs = 1;
  options.max_finished_jobs_kept = 1;
  std::vector<std::string> ids;
  {
    std::unique_ptr<JobStore> store = OpenStore();
    ASSERT_NE(store, nullptr);
    auto jobs = NewDurableManager(store.get(), options);
    gate.Close();  // the first job waits at its first network call
    for (int64_t c : {0, 1, 2}) {
      auto submitted = jobs->Submit(ClassAudit({c}, 4));
      ASSERT_TRUE(submitted.ok()) << submitted.status();
      ids.push_back(submitted->id());
    }
    for (int i = 0; i < 5000 && jobs->Get(ids[0])->state() != v1::JOB_RUNNING; ++i) {
      absl::SleepFor(absl::Milliseconds(2));
    }
    ASSERT_EQ(jobs->Get(ids[0])->state(), v1::JOB_RUNNING);
    std::thread shutdown([&jobs] { jobs->Shutdown(absl::ZeroDuration()); });
    absl::SleepFor(absl::Milliseconds(100));
    gate.Open();
    shutdown.join();
    for (const std::string& id : ids) {
      EXPECT_NE(jobs->Get(id)->error().find("resumes when a server starts"), std::string::npos)
          << id << ": " << jobs->Get(id)->error();
    }
  }
  std::unique_ptr<JobStore> store = OpenStore();
  ASSERT_NE(store, nullptr);
  JobManagerOptions full_queue;
  full_queue.max_concurrent_jobs = 1;
  full_queue.max_queued_jobs = 0;
  auto jobs = NewDurableManager(store.get(), full_queue);
  auto to_resume = jobs->Restore();
  ASSERT_TRUE(to_resume.ok()) << to_resume.status();
  EXPECT_EQ(*to_resume, 3);
  jobs->ResumeInterrupted();
  for (const std::string& id : ids) {
    const v1::AuditJob resumed = Finished(*jobs, id);
    EXPECT_EQ(resumed.state(), v1::JOB_SUCCEEDED) << id << ": " << resumed.error();
  }
}

TEST_F(DurableJobsTest, FinishedJobsAreServedAfterARestartAndCancelledOnesStayCancelled) {
  std::string done_id, cancelled_id;
  v1::AuditJob done;
  {
    std::unique_ptr<JobStore> store = OpenStore();
    auto jobs = NewDurableManager(store.get());
    auto submitted = jobs->Submit(ClassAudit({0, 1}, 3));
    ASSERT_TRUE(submitted.ok());
    done = Finished(*jobs, submitted->id());
    ASSERT_EQ(done.state(), v1::JOB_SUCCEEDED);
    auto cancelled = jobs->Submit(LongAudit());
    ASSERT_TRUE(cancelled.ok());
    cancelled_id = cancelled->id();
    ASSERT_TRUE(jobs->Cancel(cancelled_id).ok());
    ASSERT_EQ(Finished(*jobs, cancelled_id).state(), v1::JOB_CANCELLED);
    done_id = done.id();
  }
  std::unique_ptr<JobStore> store = OpenStore();
  auto jobs = NewDurableManager(store.get());
  ASSERT_EQ(*jobs->Restore(), 0);
  const v1::AuditJob served = *jobs->Get(done_id);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(served, done));
  EXPECT_EQ(jobs->Get(cancelled_id)->state(), v1::JOB_CANCELLED);
  EXPECT_EQ(jobs->gauges().stored_jobs, 2);
  EXPECT_GT(jobs->gauges().store_bytes, 0);
  // New jobs continue the sequence: newest first in List.
  auto next = jobs->Submit(ClassAudit({0}, 1));
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(AllJobs(*jobs).front().id(), next->id());
}

TEST_F(DurableJobsTest, AJobWhoseModelChangedFailsWithTheReasonAndKeepsItsSamples) {
  std::unique_ptr<JobStore> store = OpenStore();
  v1::AuditJob job;
  job.set_id("audit-00000000beef");
  job.set_state(v1::JOB_RUNNING);
  *job.mutable_request() = ClassAudit({0, 1}, 8);
  ASSERT_TRUE(store->Insert(job, 7, "sha256:an-older-version").ok());
  v1::SampleReport sample;
  sample.set_seed(0);
  ASSERT_TRUE(store->AddBatch(job.id(), 0, 0, std::vector<v1::SampleReport>(8, sample), {}).ok());
  auto jobs = NewDurableManager(store.get());
  ASSERT_EQ(*jobs->Restore(), 1);
  jobs->ResumeInterrupted();
  const v1::AuditJob failed = Finished(*jobs, job.id());
  EXPECT_EQ(failed.state(), v1::JOB_FAILED);
  EXPECT_NE(failed.error().find("changed since the audit was submitted"), std::string::npos)
      << failed.error();
  bool finished = false;
  int samples = 0;
  for (const v1::AuditEvent& event : jobs->Events(*jobs->Find(job.id()), 0, kWait, &finished)) {
    samples += event.has_sample() ? 1 : 0;
  }
  EXPECT_EQ(samples, 8);
}

TEST_F(DurableJobsTest, EvictionByCountAndAgeDeletesFromTheStore) {
  std::unique_ptr<JobStore> store = OpenStore();
  JobManagerOptions options;
  options.max_finished_jobs_kept = 2;
  {
    auto jobs = NewDurableManager(store.get(), options);
    for (int i = 0; i < 3; ++i) {
      auto submitted = jobs->Submit(ClassAudit({0}, 1));
      ASSERT_TRUE(submitted.ok());
      Finished(*jobs, submitted->id());
    }
    EXPECT_EQ(jobs->gauges().stored_jobs, 2);
  }
  EXPECT_EQ(store->LoadAll()->size(), 2u);
  // Restarted with an age limit the stored jobs are past: the newest stays.
  options.max_finished_job_age = absl::Milliseconds(1);
  absl::SleepFor(absl::Milliseconds(5));
  auto jobs = NewDurableManager(store.get(), options);
  ASSERT_TRUE(jobs->Restore().ok());
  EXPECT_EQ(store->LoadAll()->size(), 1u);
}

}  // namespace
}  // namespace memaudit::server
