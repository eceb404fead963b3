// Durable audit jobs: an SQLite database (WAL mode, synchronous=FULL) in the
// server's --state_dir that holds every accepted job's request and state,
// each finished batch of samples and each finished condition, so that a
// restarted server serves finished jobs and resumes interrupted ones
// (docs/SERVICE.md "Durable jobs").
//
// Layout of the directory: jobs.sqlite (+ its -wal and -shm files) and
// LOCK, which the open store holds with an exclusive flock(2): a second
// server on the same directory is refused at start.
//
// Errors: every write returns the database's error (e.g. "database or disk
// is full") as UNAVAILABLE, naming the file; nothing is half-written (each
// call is one transaction). Thread-safe: calls are serialized.
#ifndef MEMAUDIT_SERVER_JOB_STORE_H_
#define MEMAUDIT_SERVER_JOB_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "memaudit/v1/audit_service.pb.h"

struct sqlite3;

namespace memaudit::server {

// A job as the store holds it.
struct StoredJob {
  uint64_t sequence = 0;       // the job manager's creation order
  std::string model_checksum;  // of the model version the job was planned on
  // The job with its request; without per-sample reports (its report, when
  // finished, has conditions without samples).
  v1::AuditJob job;
  // Finished conditions by index in the request's conditions (label,
  // verdict, counts, early metrics; without samples).
  std::map<int64_t, v1::ConditionReport> conditions;
  // Finished samples by condition index, in sample order (index i is
  // seed + i); batches are written whole.
  std::map<int64_t, std::vector<v1::SampleReport>> samples;
};

class JobStore {
 public:
  // The write-ahead log's file is truncated to at most this after each
  // checkpoint (SQLite checkpoints every 1,000 pages, ~4 MB), and emptied
  // when the store is closed. A single transaction larger than this (one
  // batch of very large reports) still grows it until the next checkpoint.
  static constexpr int64_t kMaxLogBytes = 4 << 20;

  // Creates `directory` (and the database) when missing. FAILED_PRECONDITION
  // naming the directory when it cannot be created or written, when another
  // process holds its lock, or when jobs.sqlite is not a readable job store
  // (corrupt, or another program's database: the message says to move it
  // away).
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& directory);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  // A new job: its request and state (AuditJob.request must be set).
  absl::Status Insert(const v1::AuditJob& job, uint64_t sequence,
                      const std::string& model_checksum);
  // The job's state (everything but the request and per-sample reports;
  // those in `job` are ignored).
  absl::Status UpdateState(const v1::AuditJob& job);
  // One finished batch: samples [first, first + samples.size()) of
  // condition `condition`, and the progress after it, in one transaction.
  absl::Status AddBatch(const std::string& id, int64_t condition, int64_t first,
                        const std::vector<v1::SampleReport>& samples,
                        const v1::AuditProgress& progress);
  // A finished condition (its samples are ignored: AddBatch wrote them) and
  // the progress after it, in one transaction.
  absl::Status AddCondition(const std::string& id, int64_t condition,
                            const v1::ConditionReport& report, const v1::AuditProgress& progress);
  // Forgets a job and everything written for it.
  absl::Status Delete(const std::string& id);

  // Every job, in sequence order. A row that does not parse is skipped with
  // a line on stderr (and left in the database).
  absl::StatusOr<std::vector<StoredJob>> LoadAll() const;

  // Bytes on disk: the database and its write-ahead log.
  int64_t bytes() const;
  const std::string& path() const { return path_; }

 private:
  JobStore(sqlite3* db, int lock_fd, std::string directory, std::string path);
  // Runs `sql` (no results). Error messages name the store's file.
  absl::Status Exec(const char* sql) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Error(const char* what) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Replaces the progress in job `id`'s state, inside the caller's
  // transaction (on error the caller rolls back).
  absl::Status SaveProgress(const std::string& id, const v1::AuditProgress& progress)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  sqlite3* const db_ ABSL_PT_GUARDED_BY(mu_);
  const int lock_fd_;
  const std::string directory_;
  const std::string path_;
};

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_JOB_STORE_H_
