#include "server/job_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"

namespace memaudit::server {
namespace {

// Bumped when the tables change; a store of another version is refused
// rather than misread.
constexpr int kSchemaVersion = 1;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  sequence INTEGER NOT NULL,
  model_checksum TEXT NOT NULL,
  request BLOB NOT NULL,  -- v1.AuditRequest, written once
  state BLOB NOT NULL     -- v1.AuditJob without request and samples
);
CREATE TABLE IF NOT EXISTS samples (
  job TEXT NOT NULL,
  condition INTEGER NOT NULL,
  sample INTEGER NOT NULL,
  report BLOB NOT NULL,   -- v1.SampleReport
  PRIMARY KEY (job, condition, sample)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conditions (
  job TEXT NOT NULL,
  condition INTEGER NOT NULL,
  report BLOB NOT NULL,   -- v1.ConditionReport without samples
  PRIMARY KEY (job, condition)
) WITHOUT ROWID;
)sql";

// A prepared statement, finalized on scope exit.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  bool ok() const { return rc_ == SQLITE_OK; }
  Statement& Bind(int index, const std::string& text) {
    sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& BindBlob(int index, const std::string& bytes) {
    sqlite3_bind_blob(stmt_, index, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& Bind(int index, int64_t value) {
    sqlite3_bind_int64(stmt_, index, value);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return sqlite3_step(stmt_); }
  int64_t Int(int column) const { return sqlite3_column_int64(stmt_, column); }
  std::string Text(int column) const {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
    return text == nullptr ? std::string() : std::string(text, sqlite3_column_bytes(stmt_, column));
  }
  std::string Blob(int column) const {
    const auto* data = static_cast<const char*>(sqlite3_column_blob(stmt_, column));
    return data == nullptr ? std::string() : std::string(data, sqlite3_column_bytes(stmt_, column));
  }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_OK;
};

// The job's state as stored: no request (a column of its own), and no
// per-sample reports (rows of their own).
std::string StateBytes(const v1::AuditJob& job) {
  v1::AuditJob state = job;
  state.clear_request();
  if (state.has_report()) {
    for (v1::ConditionReport& condition : *state.mutable_report()->mutable_conditions()) {
      condition.clear_samples();
    }
  }
  return state.SerializeAsString();
}

absl::Status Precondition(const std::string& directory, const std::string& why) {
  return absl::FailedPreconditionError(absl::StrCat("--state_dir ", directory, ": ", why));
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& directory) {
  std::error_code error;
  std::filesystem::create_directories(directory, error);
  if (error) return Precondition(directory, "cannot create the directory: " + error.message());
  if (::access(directory.c_str(), W_OK | X_OK) != 0) {
    return Precondition(directory, absl::StrCat("not writable: ", std::strerror(errno)));
  }
  const std::string lock_path = directory + "/LOCK";
  const int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd < 0) {
    return Precondition(directory, absl::StrCat("cannot open LOCK: ", std::strerror(errno)));
  }
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    char holder[32] = {};
    (void)!::pread(lock_fd, holder, sizeof(holder) - 1, 0);
    ::close(lock_fd);
    std::string pid(holder);
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    return Precondition(directory,
                        absl::StrCat("in use by another memaudit-server",
                                     pid.empty() ? "" : absl::StrCat(" (pid ", pid, ")"),
                                     "; each server needs a state directory of its own"));
  }
  const std::string pid = absl::StrCat(::getpid(), "\n");
  (void)!::ftruncate(lock_fd, 0);
  (void)!::pwrite(lock_fd, pid.data(), pid.size(), 0);

  const std::string path = directory + "/jobs.sqlite";
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  auto fail = [&](const std::string& why) {
    sqlite3_close(db);
    ::close(lock_fd);
    return Precondition(directory, why);
  };
  if (rc != SQLITE_OK) return fail(absl::StrCat("cannot open ", path, ": ", sqlite3_errstr(rc)));
  sqlite3_busy_timeout(db, 5000);
  // The first statement reads the file: a corrupt one, or one that is not
  // SQLite, fails here.
  char* message = nullptr;
  auto run = [&](const char* sql) {
    sqlite3_free(message);
    message = nullptr;
    return sqlite3_exec(db, sql, nullptr, nullptr, &message);
  };
  auto describe = [&](int code) {
    return absl::StrCat(message != nullptr ? message : sqlite3_errstr(code));
  };
  const std::string move_away =
      absl::StrCat("; move ", path,
                   " (and its -wal and -shm files) away to start with an empty "
                   "store");
  if ((rc = run("PRAGMA journal_mode=WAL")) != SQLITE_OK) {
    const std::string why = describe(rc);
    sqlite3_free(message);
    return fail(absl::StrCat(path, " is not a readable job store (", why, ")", move_away));
  }
  // An integrity check costs a read of the file; it is what tells a torn or
  // overwritten store from a good one before any job is trusted.
  {
    Statement check(db, "PRAGMA quick_check");
    std::string result;
    if (check.ok() && check.Step() == SQLITE_ROW) result = check.Text(0);
    if (result != "ok") {
      sqlite3_free(message);
      return fail(absl::StrCat(path, " is corrupt (quick_check: ",
                               result.empty() ? sqlite3_errmsg(db) : result, ")", move_away));
    }
  }
  int version = 0;
  {
    Statement read_version(db, "PRAGMA user_version");
    if (read_version.ok() && read_version.Step() == SQLITE_ROW) {
      version = static_cast<int>(read_version.Int(0));
    }
  }
  if (version != 0 && version != kSchemaVersion) {
    sqlite3_free(message);
    return fail(absl::StrCat(path, " has job store version ", version, "; this server reads ",
                             kSchemaVersion, move_away));
  }
  // The log is checkpointed every 1,000 pages (SQLite's default) but its file
  // keeps its largest size unless a limit truncates it after each reset:
  // two 16,000-sample audits left a 48 MB log behind.
  if ((rc = run(absl::StrCat("PRAGMA journal_size_limit=", kMaxLogBytes).c_str())) != SQLITE_OK ||
      (rc = run("PRAGMA synchronous=FULL")) != SQLITE_OK || (rc = run(kSchema)) != SQLITE_OK ||
      (rc = run(absl::StrCat("PRAGMA user_version=", kSchemaVersion).c_str())) != SQLITE_OK) {
    const std::string why = describe(rc);
    sqlite3_free(message);
    return fail(absl::StrCat("cannot set up ", path, ": ", why));
  }
  sqlite3_free(message);
  return std::unique_ptr<JobStore>(new JobStore(db, lock_fd, directory, path));
}

JobStore::JobStore(sqlite3* db, int lock_fd, std::string directory, std::string path)
    : db_(db), lock_fd_(lock_fd), directory_(std::move(directory)), path_(std::move(path)) {}

JobStore::~JobStore() {
  {
    absl::MutexLock lock(&mu_);
    // Everything into the database and the log emptied, so that a stopped
    // server leaves no log behind (sqlite3_close would also try, but only
    // when no other connection holds the file).
    sqlite3_exec(db_, "PRAGMA wal_checkpoint(TRUNCATE)", nullptr, nullptr, nullptr);
    sqlite3_close(db_);
  }
  ::close(lock_fd_);  // releases the flock
}

absl::Status JobStore::Error(const char* what) const {
  return absl::UnavailableError(
      absl::StrCat("job store ", path_, ": ", what, ": ", sqlite3_errmsg(db_)));
}

absl::Status JobStore::Exec(const char* sql) const {
  if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK) return Error(sql);
  return absl::OkStatus();
}

// Every write below is one transaction: BEGIN IMMEDIATE ... COMMIT, rolled
// back on the first error.
#define MEMAUDIT_STORE_STEP(statement, what)                      \
  do {                                                            \
    if (!(statement).ok() || (statement).Step() != SQLITE_DONE) { \
      absl::Status error = Error(what);                           \
      (void)Exec("ROLLBACK");                                     \
      return error;                                               \
    }                                                             \
  } while (0)

absl::Status JobStore::Insert(const v1::AuditJob& job, uint64_t sequence,
                              const std::string& model_checksum) {
  absl::MutexLock lock(&mu_);
  Statement insert(db_,
                   "INSERT INTO jobs (id, sequence, model_checksum, request, state) "
                   "VALUES (?, ?, ?, ?, ?)");
  insert.Bind(1, job.id())
      .Bind(2, static_cast<int64_t>(sequence))
      .Bind(3, model_checksum)
      .BindBlob(4, job.request().SerializeAsString())
      .BindBlob(5, StateBytes(job));
  if (!insert.ok() || insert.Step() != SQLITE_DONE) return Error("saving a new job");
  return absl::OkStatus();
}

absl::Status JobStore::UpdateState(const v1::AuditJob& job) {
  absl::MutexLock lock(&mu_);
  Statement update(db_, "UPDATE jobs SET state = ? WHERE id = ?");
  update.BindBlob(1, StateBytes(job)).Bind(2, job.id());
  if (!update.ok() || update.Step() != SQLITE_DONE) return Error("saving a job's state");
  return absl::OkStatus();
}

absl::Status JobStore::AddBatch(const std::string& id, int64_t condition, int64_t first,
                                const std::vector<v1::SampleReport>& samples,
                                const v1::AuditProgress& progress) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  for (size_t i = 0; i < samples.size(); ++i) {
    Statement insert(db_,
                     "INSERT OR REPLACE INTO samples (job, condition, sample, report) "
                     "VALUES (?, ?, ?, ?)");
    insert.Bind(1, id)
        .Bind(2, condition)
        .Bind(3, first + static_cast<int64_t>(i))
        .BindBlob(4, samples[i].SerializeAsString());
    MEMAUDIT_STORE_STEP(insert, "saving a batch of samples");
  }
  if (absl::Status saved = SaveProgress(id, progress); !saved.ok()) {
    (void)Exec("ROLLBACK");
    return saved;
  }
  return Exec("COMMIT");
}

absl::Status JobStore::AddCondition(const std::string& id, int64_t condition,
                                    const v1::ConditionReport& report,
                                    const v1::AuditProgress& progress) {
  v1::ConditionReport without_samples = report;
  without_samples.clear_samples();
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  Statement insert(db_,
                   "INSERT OR REPLACE INTO conditions (job, condition, report) VALUES (?, ?, ?)");
  insert.Bind(1, id).Bind(2, condition).BindBlob(3, without_samples.SerializeAsString());
  MEMAUDIT_STORE_STEP(insert, "saving a finished condition");
  if (absl::Status saved = SaveProgress(id, progress); !saved.ok()) {
    (void)Exec("ROLLBACK");
    return saved;
  }
  return Exec("COMMIT");
}

absl::Status JobStore::SaveProgress(const std::string& id, const v1::AuditProgress& progress) {
  // The progress lives in the state blob: read, patch, write. The SELECT is
  // finalized before the caller's COMMIT: a statement still on a row keeps
  // its read snapshot past the commit, so the checkpoint that follows cannot
  // finish, the log is never reset, and its file keeps growing.
  v1::AuditJob state;
  {
    Statement read(db_, "SELECT state FROM jobs WHERE id = ?");
    read.Bind(1, id);
    if (!read.ok() || read.Step() != SQLITE_ROW || !state.ParseFromString(read.Blob(0))) {
      return Error("reading a job's state");
    }
  }
  *state.mutable_progress() = progress;
  Statement update(db_, "UPDATE jobs SET state = ? WHERE id = ?");
  update.BindBlob(1, state.SerializeAsString()).Bind(2, id);
  if (!update.ok() || update.Step() != SQLITE_DONE) return Error("saving a job's progress");
  return absl::OkStatus();
}

absl::Status JobStore::Delete(const std::string& id) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  for (const char* sql :
       {"DELETE FROM samples WHERE job = ?", "DELETE FROM conditions WHERE job = ?",
        "DELETE FROM jobs WHERE id = ?"}) {
    Statement erase(db_, sql);
    erase.Bind(1, id);
    MEMAUDIT_STORE_STEP(erase, "deleting a job");
  }
  return Exec("COMMIT");
}

#undef MEMAUDIT_STORE_STEP

absl::StatusOr<std::vector<StoredJob>> JobStore::LoadAll() const {
  absl::MutexLock lock(&mu_);
  std::vector<StoredJob> jobs;
  std::map<std::string, size_t> index;
  Statement select(db_,
                   "SELECT id, sequence, model_checksum, request, state FROM jobs "
                   "ORDER BY sequence");
  if (!select.ok()) return Error("reading jobs");
  int rc;
  while ((rc = select.Step()) == SQLITE_ROW) {
    StoredJob job;
    const std::string id = select.Text(0);
    job.sequence = static_cast<uint64_t>(select.Int(1));
    job.model_checksum = select.Text(2);
    if (!job.job.ParseFromString(select.Blob(4)) ||
        !job.job.mutable_request()->ParseFromString(select.Blob(3)) || job.job.id() != id) {
      std::fprintf(stderr, "memaudit-server: job store %s: job %s does not parse; skipped\n",
                   path_.c_str(), id.c_str());
      continue;
    }
    index[id] = jobs.size();
    jobs.push_back(std::move(job));
  }
  if (rc != SQLITE_DONE) return Error("reading jobs");
  Statement conditions(db_, "SELECT job, condition, report FROM conditions");
  if (!conditions.ok()) return Error("reading conditions");
  while ((rc = conditions.Step()) == SQLITE_ROW) {
    auto it = index.find(conditions.Text(0));
    v1::ConditionReport report;
    if (it == index.end() || !report.ParseFromString(conditions.Blob(2))) continue;
    jobs[it->second].conditions[conditions.Int(1)] = std::move(report);
  }
  if (rc != SQLITE_DONE) return Error("reading conditions");
  Statement samples(db_,
                    "SELECT job, condition, sample, report FROM samples "
                    "ORDER BY job, condition, sample");
  if (!samples.ok()) return Error("reading samples");
  while ((rc = samples.Step()) == SQLITE_ROW) {
    auto it = index.find(samples.Text(0));
    if (it == index.end()) continue;
    std::vector<v1::SampleReport>& of_condition = jobs[it->second].samples[samples.Int(1)];
    // Only a contiguous prefix is usable (batches are written whole, so a
    // gap means a damaged row).
    if (samples.Int(2) != static_cast<int64_t>(of_condition.size())) continue;
    v1::SampleReport report;
    if (!report.ParseFromString(samples.Blob(3))) continue;
    of_condition.push_back(std::move(report));
  }
  if (rc != SQLITE_DONE) return Error("reading samples");
  return jobs;
}

int64_t JobStore::bytes() const {
  int64_t total = 0;
  for (const char* suffix : {"", "-wal"}) {
    std::error_code error;
    const auto size = std::filesystem::file_size(path_ + suffix, error);
    if (!error) total += static_cast<int64_t>(size);
  }
  return total;
}

}  // namespace memaudit::server
