// Audit jobs: a bounded queue in front of a fixed pool of job workers,
// progress events for watchers, cancellation, and a bounded history of
// finished jobs. Thread-safe.
#ifndef MEMAUDIT_SERVER_JOB_MANAGER_H_
#define MEMAUDIT_SERVER_JOB_MANAGER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "memaudit/v1/audit_service.pb.h"
#include "metrics.h"
#include "model_registry.h"
#include "worker_pool.h"

namespace memaudit::server {

struct JobManagerOptions {
  int max_concurrent_jobs = 2;
  int max_queued_jobs = 16;
  int max_finished_jobs_kept = 1000;
};

class JobManager {
 public:
  JobManager(ModelRegistry* registry, Metrics* metrics, JobManagerOptions options);
  ~JobManager();

  // Validates the request (NOT_FOUND / UNAVAILABLE model, INVALID_ARGUMENT
  // field) and queues it: RESOURCE_EXHAUSTED when the queue is full,
  // UNAVAILABLE when shutting down.
  absl::StatusOr<v1::AuditJob> Submit(const v1::AuditRequest& request);
  // NOT_FOUND for an unknown id.
  absl::StatusOr<v1::AuditJob> Get(const std::string& id) const;
  // Newest first, without per-sample reports.
  std::vector<v1::AuditJob> List() const;
  // Requests cancellation; a queued job ends at once, a running one at its
  // next stop check. Cancelling a finished job is a no-op.
  absl::StatusOr<v1::AuditJob> Cancel(const std::string& id);

  // Events from index `from` on, waiting up to `timeout` for at least one.
  // `finished` tells whether the job has ended (its last event is final).
  absl::StatusOr<std::vector<v1::AuditEvent>> Events(const std::string& id, size_t from,
                                                     absl::Duration timeout, bool* finished) const;

  // Stops accepting jobs, lets running and queued ones finish for up to
  // `grace`, then cancels the rest and waits for them to stop.
  void Shutdown(absl::Duration grace);

  int64_t queued() const;
  int64_t running() const;

 private:
  struct Job {
    v1::AuditJob state;  // guarded by the manager's mutex
    std::vector<v1::AuditEvent> events;
    std::atomic<bool> cancel{false};
    std::chrono::steady_clock::time_point created;
  };
  void Run(const std::shared_ptr<Job>& job);
  void Finish(Job& job, v1::JobState state, const std::string& error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TrimHistory() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string NewId();

  ModelRegistry* const registry_;
  Metrics* const metrics_;
  const JobManagerOptions options_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Job>> jobs_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> order_ ABSL_GUARDED_BY(mu_);  // creation order
  int64_t active_ ABSL_GUARDED_BY(mu_) = 0;             // queued + running
  std::atomic<uint64_t> next_id_{0};
  std::unique_ptr<WorkerPool> pool_;
};

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_JOB_MANAGER_H_
