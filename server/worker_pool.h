// A fixed pool of worker threads with a bounded queue: where the server's
// heavy work (sampling, Jacobians, eigen-solves) runs, never on gRPC's
// threads. Each task counts as HostWork (core/runtime/host_allocator.h), so
// the server's idle release of host memory waits for every pool's tasks.
#ifndef MEMAUDIT_SERVER_WORKER_POOL_H_
#define MEMAUDIT_SERVER_WORKER_POOL_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace memaudit::server {

class WorkerPool {
 public:
  // `threads` workers; at most `max_queued` tasks wait beyond the running
  // ones. Thread-safe.
  WorkerPool(std::string name, int threads, int max_queued);
  // Runs everything already queued, then joins.
  ~WorkerPool();

  // Queues `task`. RESOURCE_EXHAUSTED when the queue is full,
  // UNAVAILABLE after Close().
  absl::Status Submit(std::function<void()> task);
  // Queues `task` whatever the queue holds: for work accepted earlier (jobs
  // resumed after a restart), which the bound on new work must not turn
  // away. UNAVAILABLE after Close().
  absl::Status SubmitAccepted(std::function<void()> task);
  // Refuses new tasks from now on (queued ones still run).
  void Close();
  // Close(), run what is queued, and join the workers. Idempotent; the
  // object stays usable for queued()/running() (both 0 afterwards).
  void Join();

  int64_t queued() const;
  int64_t running() const;

 private:
  void Work();

  const std::string name_;
  const int max_queued_;
  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  int64_t running_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
  std::mutex join_mu_;  // serializes Join()
};

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_WORKER_POOL_H_
