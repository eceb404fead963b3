// Audit jobs: a bounded queue in front of a fixed pool of job workers,
// progress events for watchers, cancellation, and a bounded history of
// finished jobs. Thread-safe.
//
// Memory: a job's report is stored once. Its event log holds progress
// snapshots and references to the samples (materialized into AuditEvent
// messages only when read); the final event is built from the job on
// demand. Finished jobs are kept up to a count and a total serialized size,
// oldest evicted first (counted in metrics); the most recently finished job
// is always kept.
//
// Durability (with a JobStore, --state_dir): a job is saved before Submit
// returns, each finished batch of samples before watchers see it, each state
// change when it happens. Restore() brings a restarted server's jobs back:
// finished ones as they were, interrupted and queued ones queued again, to
// continue from their last finished batch once ResumeInterrupted() is
// called (after the models are loaded). A job stopped by Shutdown stays
// resumable in the store. Eviction from the history deletes from the store.
#ifndef MEMAUDIT_SERVER_JOB_MANAGER_H_
#define MEMAUDIT_SERVER_JOB_MANAGER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "memaudit/v1/audit_service.pb.h"
#include "server/audit_runner.h"
#include "server/job_store.h"
#include "server/metrics.h"
#include "server/model_registry.h"
#include "server/plans.h"
#include "server/request_memory.h"
#include "server/worker_pool.h"

namespace memaudit::server {

// The largest audit request a job keeps (after unknown fields are dropped).
inline constexpr size_t kMaxStoredRequestBytes = size_t{64} << 20;

struct JobManagerOptions {
  int max_concurrent_jobs = 2;
  int max_queued_jobs = 16;
  int max_finished_jobs_kept = 1000;
  int64_t max_finished_job_bytes = int64_t{256} << 20;
  // An audit whose memory estimate (request_memory.h) exceeds the budget's
  // limit, or what its CUDA device has left, is refused with
  // RESOURCE_EXHAUSTED. Default: no limit.
  MemoryBudget memory = MemoryBudget();
  // Finished jobs older than this are evicted too; zero: no age limit.
  absl::Duration max_finished_job_age = absl::ZeroDuration();
};

class JobManager {
 public:
  // `metrics` and `store` may be null; `store` outlives the manager.
  JobManager(ModelRegistry* registry, Metrics* metrics, JobManagerOptions options,
             JobStore* store = nullptr);

  // Loads the store's jobs (call once, before serving). Finished jobs are
  // served as they were; unfinished ones are shown QUEUED (AuditJob.resumed
  // counts the restarts) until ResumeInterrupted(). Returns the number of
  // jobs to resume. An error only when the store cannot be read.
  absl::StatusOr<int> Restore();
  // Queues the restored unfinished jobs (once the models are loaded),
  // however full the queue: they were accepted before the restart. A job
  // whose model is gone, or has changed since the job was planned (another
  // checksum), fails with that reason and keeps its finished samples. A job
  // stopped by Shutdown, before or after it ran, stays resumable in the
  // store: the history's caps never evict it.
  void ResumeInterrupted();
  ~JobManager();

  // Plans the request against the model as loaded now (NOT_FOUND /
  // UNAVAILABLE model, INVALID_ARGUMENT field) and queues the plan: the job
  // audits that version of the model even if it is reloaded or unloaded
  // meanwhile. RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE when
  // shutting down.
  // `owner` (the caller's name, "" on an open server) is recorded in the
  // job (AuditJob.owner). Planning asks `stop` while it tokenizes prompts,
  // and once more before the job is created (the caller's deadline; its
  // status is returned and no job exists).
  absl::StatusOr<v1::AuditJob> Submit(const v1::AuditRequest& request,
                                      const std::string& owner = "",
                                      const StopCheck& stop = nullptr);
  // NOT_FOUND for an unknown (or evicted) id.
  absl::StatusOr<v1::AuditJob> Get(const std::string& id) const;
  // A page of jobs, newest first, without per-sample reports.
  struct ListQuery {
    std::optional<std::string> owner;  // only this owner's jobs; all when unset
    int page_size = 0;                 // 0: kDefaultListPageSize; at most kMaxListPageSize
    std::string page_token;            // ListPage::next_page_token of the previous page
  };
  struct ListPage {
    std::vector<v1::AuditJob> jobs;
    std::string next_page_token;  // empty on the last page
  };
  static constexpr int kDefaultListPageSize = 100;
  static constexpr int kMaxListPageSize = 1000;
  static constexpr size_t kMaxListPageBytes = size_t{16} << 20;
  // INVALID_ARGUMENT for a page size out of range or a malformed token.
  absl::StatusOr<ListPage> List(const ListQuery& query) const;
  // Requests cancellation; a queued job ends at once, a running one at its
  // next stop check. Cancelling a finished job is a no-op.
  absl::StatusOr<v1::AuditJob> Cancel(const std::string& id);

  // A job that stays readable while held, even after it is evicted from
  // the history (a watcher reads to the end of the job it started on).
  struct Job;
  using JobRef = std::shared_ptr<const Job>;
  // NOT_FOUND for an unknown (or evicted) id.
  absl::StatusOr<JobRef> Find(const std::string& id) const;

  // Events from index `from` on, waiting up to `timeout` for at least one.
  // `finished` tells whether the job has ended; its last event is then the
  // final one (AuditEvent.finished).
  std::vector<v1::AuditEvent> Events(const JobRef& job, size_t from, absl::Duration timeout,
                                     bool* finished) const;
  // The same by id: NOT_FOUND for an unknown (or evicted) id.
  absl::StatusOr<std::vector<v1::AuditEvent>> Events(const std::string& id, size_t from,
                                                     absl::Duration timeout, bool* finished) const;

  // Waits up to `timeout` for the job to end; returns it (ended or not).
  absl::StatusOr<v1::AuditJob> Await(const std::string& id, absl::Duration timeout) const;

  // Stops accepting jobs, lets running and queued ones finish for up to
  // `grace`, then cancels the rest and waits for them to stop.
  void Shutdown(absl::Duration grace);

  JobGauges gauges() const;

 private:
  // One entry of a job's event log.
  struct Event {
    enum class Kind { kProgress, kSample, kFinished } kind;
    std::optional<v1::AuditProgress> progress;  // kProgress
    int64_t sample = 0;                         // kSample: index in report order
  };
  void Run(const std::shared_ptr<Job>& job);
  void Finish(Job& job, v1::JobState state, const std::string& error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddProgress(Job& job, const v1::AuditProgress& progress) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `condition_starts`: where each condition's samples start in report
  // order (for a succeeded job).
  v1::AuditEvent Materialize(const Job& job, const Event& event,
                             const std::vector<int64_t>& condition_starts) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void TrimHistory() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static int64_t FinishedJobBytes(const Job& job);
  // Saves the job's state (no-op without a store); a failure is logged: the
  // job in memory is still right, and a restart resumes it from its samples.
  void SaveState(const Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Plans a restored job against the model as loaded now (reads only what
  // never changes once the job is shared).
  absl::StatusOr<std::shared_ptr<const AuditPlan>> PlanRestored(const Job& job);
  std::string NewId();

  ModelRegistry* const registry_;
  Metrics* const metrics_;
  const JobManagerOptions options_;
  JobStore* const store_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Job>> jobs_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> order_ ABSL_GUARDED_BY(mu_);     // creation order
  std::deque<std::string> finished_ ABSL_GUARDED_BY(mu_);  // finishing order
  int64_t finished_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t active_ ABSL_GUARDED_BY(mu_) = 0;  // queued + running
  std::atomic<uint64_t> next_id_{0};
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 1;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::shared_ptr<Job>> to_resume_ ABSL_GUARDED_BY(mu_);  // Restore → ResumeInterrupted
  std::unique_ptr<WorkerPool> pool_;
};

struct JobManager::Job {
  std::string owner;      // set before the job is shared; never changes
  uint64_t sequence = 0;  // creation order (1, 2, ...): ListAudits paging
  v1::AuditJob state;     // guarded by the manager's mutex; the report lives here
  // Released when the job ends; null until a restored job runs (guarded by
  // the manager's mutex).
  std::shared_ptr<const AuditPlan> plan;
  // Restored from the store: planned when it runs, against the model as
  // loaded then. Set before the job is shared; never changes.
  bool restored = false;
  std::string model_checksum;  // of the model version the job was planned on
  // A restored job's finished work (consumed when it runs).
  AuditResume resume;
  // Samples finished so far while running; moved out when the report
  // (which holds them) arrives. Kept when the job fails or is cancelled.
  std::vector<v1::SampleReport> streamed;
  std::vector<Event> events;
  int64_t bytes = 0;  // serialized size once finished
  std::atomic<bool> cancel{false};
  bool cancelled_by_caller = false;  // CancelAudit, not a shutdown (guarded by the manager's mutex)
  std::chrono::steady_clock::time_point created;
};

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_JOB_MANAGER_H_
