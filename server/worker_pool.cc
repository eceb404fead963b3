#include "server/worker_pool.h"

#include "absl/strings/str_cat.h"
#include "core/runtime/host_allocator.h"

namespace memaudit::server {

WorkerPool::WorkerPool(std::string name, int threads, int max_queued)
    : name_(std::move(name)), max_queued_(max_queued) {
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { Work(); });
}

WorkerPool::~WorkerPool() { Join(); }

void WorkerPool::Join() {
  std::lock_guard<std::mutex> join_lock(join_mu_);
  {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    stopping_ = true;
  }
  for (std::thread& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

absl::Status WorkerPool::Submit(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  if (closed_) return absl::UnavailableError(absl::StrCat(name_, ": shutting down"));
  // Idle workers take tasks at once; max_queued_ bounds those that wait.
  const int64_t waiting_after =
      static_cast<int64_t>(queue_.size()) + 1 + running_ - static_cast<int64_t>(threads_.size());
  if (waiting_after > max_queued_) {
    return absl::ResourceExhaustedError(
        absl::StrCat(name_, ": queue full (", max_queued_, " waiting); retry later"));
  }
  queue_.push_back(std::move(task));
  return absl::OkStatus();
}

absl::Status WorkerPool::SubmitAccepted(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  if (closed_) return absl::UnavailableError(absl::StrCat(name_, ": shutting down"));
  queue_.push_back(std::move(task));
  return absl::OkStatus();
}

void WorkerPool::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

int64_t WorkerPool::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(queue_.size());
}

int64_t WorkerPool::running() const {
  absl::MutexLock lock(&mu_);
  return running_;
}

void WorkerPool::Work() {
  while (true) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](WorkerPool* pool) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pool->mu_) {
            return !pool->queue_.empty() || pool->stopping_;
          },
          this));
      if (queue_.empty()) return;  // stopping and drained
      task = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
    }
    {
      HostWork in_flight;  // no idle release of host memory meanwhile
      task();
    }
    absl::MutexLock lock(&mu_);
    --running_;
  }
}

}  // namespace memaudit::server
