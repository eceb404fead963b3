#include "client/fanout_runner.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace memaudit::client {
namespace {

// How long a best-effort CancelAudit of a shard's job may take: a frozen
// replica must not hold Ctrl-C or the next attempt for the --timeout.
constexpr std::chrono::seconds kCancelTimeout{5};

// How one attempt at a shard ended.
struct Outcome {
  // kReplicaBusy: the replica's queue was full when the shard was submitted.
  enum Kind { kDone, kReplicaFailed, kReplicaBusy, kFatal, kStopped } kind = kFatal;
  absl::Status status;              // kReplicaFailed, kReplicaBusy, kFatal
  std::optional<v1::AuditJob> job;  // kDone
};

bool IsReplicaFailure(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable ||
         status.code() == absl::StatusCode::kDeadlineExceeded;
}

Outcome Classify(const absl::Status& status) {
  return {IsReplicaFailure(status) ? Outcome::kReplicaFailed : Outcome::kFatal, status, {}};
}

class FanoutRun {
 public:
  FanoutRun(const std::vector<Replica>& replicas, const FanoutOptions& options)
      : options_(options) {
    for (const Replica& replica : replicas) {
      ChannelSecurity security = options.security;
      if (security.tls && security.server_name.empty()) security.server_name = replica.name;
      replicas_.push_back(
          {replica.address,
           std::make_unique<Client>(replica.address, options.timeout, security, options.keepalive),
           /*alive=*/true, /*running=*/0, /*capacity=*/options.per_replica});
    }
  }

  absl::StatusOr<FanoutResult> Run(const v1::AuditRequest& request) {
    if (absl::Status same = CheckModelVersions(request.model()); !same.ok()) return same;
    absl::StatusOr<std::vector<ShardRequest>> split = SplitAudit(
        request, options_.shards > 0 ? options_.shards : static_cast<int64_t>(replicas_.size()));
    if (!split.ok()) return split.status();
    for (ShardRequest& shard : *split) {
      const int64_t total = shard.shard.conditions() * shard.shard.samples();
      shards_.push_back(Shard{std::move(shard), total, 0, "", {}});
      pending_.push_back(shards_.size() - 1);
    }
    {
      std::unique_lock<std::mutex> lock(mu_);
      while (finished_ < shards_.size() && error_.ok()) {
        if (options_.interrupted && options_.interrupted()) {
          error_ = absl::CancelledError("interrupted");
          break;
        }
        Dispatch();
        if (!pending_.empty() && running_ == 0 && !AnyReplicaAlive()) {
          error_ = absl::UnavailableError(
              absl::StrCat("every replica failed: ", absl::StrJoin(failures_, "; ")));
          break;
        }
        changed_.wait_for(lock, std::chrono::milliseconds(100));
      }
      stop_ = true;  // running shards cancel their jobs
    }
    for (std::thread& thread : threads_) thread.join();
    if (!error_.ok()) return error_;
    FanoutResult result;
    std::vector<ShardReport> reports;
    for (const Shard& shard : shards_) {
      result.jobs.push_back(absl::StrCat(shard.replica, "/", shard.job.id()));
      reports.push_back({shard.replica, shard.job.report()});
    }
    absl::StatusOr<v1::AuditReport> merged = MergeShardReports(reports);
    if (!merged.ok()) return merged.status();
    result.report = *std::move(merged);
    return result;
  }

 private:
  struct ReplicaState {
    std::string address;
    std::unique_ptr<Client> client;
    bool alive = true;
    int running = 0;
    int capacity = 0;  // shards at a time: options.per_replica, less once its queue was full
  };
  struct Shard {
    ShardRequest request;
    int64_t total = 0;  // samples, for progress
    int64_t done = 0;
    std::string replica;  // of the running or finished attempt
    v1::AuditJob job;     // finished, with report.shard set
  };

  // Before any work: every reachable replica must serve the same version of
  // the model (the merge would refuse their reports afterwards, with the
  // work done). An unreachable replica is marked failed; one that cannot
  // serve the model (NOT_FOUND, not loaded) is left out, with a notice.
  absl::Status CheckModelVersions(const std::string& model) {
    std::vector<std::pair<std::string, std::string>> checksums;  // address, checksum
    for (ReplicaState& replica : replicas_) {
      absl::StatusOr<v1::ModelInfo> info = replica.client->GetModel(model);
      absl::Status problem = info.status();
      if (info.ok() && info->state() != v1::MODEL_READY) {
        problem = absl::FailedPreconditionError(
            absl::StrCat("model \"", model, "\" is ", v1::ModelState_Name(info->state())));
      }
      if (problem.ok()) {
        checksums.emplace_back(replica.address, info->checksum());
        continue;
      }
      replica.alive = false;
      failures_.push_back(absl::StrCat(replica.address, ": ", problem.ToString()));
      if (options_.on_notice) {
        options_.on_notice(
            absl::StrCat("replica ", replica.address, " left out: ", problem.ToString()));
      }
    }
    if (checksums.empty()) {
      return absl::UnavailableError(absl::StrCat("no replica can serve model \"", model,
                                                 "\": ", absl::StrJoin(failures_, "; ")));
    }
    for (const auto& [address, checksum] : checksums) {
      if (checksum != checksums.front().second) {
        return absl::FailedPreconditionError(
            absl::StrCat("replicas serve different versions of model \"", model,
                         "\": ", checksums.front().first, " has ", checksums.front().second, ", ",
                         address, " has ", checksum, "; load the same model.pt on every replica"));
      }
    }
    return absl::OkStatus();
  }

  bool AnyReplicaAlive() const {
    for (const ReplicaState& replica : replicas_) {
      if (replica.alive) return true;
    }
    return false;
  }

  // Starts pending shards on live replicas with room, round-robin. mu_ held.
  void Dispatch() {
    while (!pending_.empty()) {
      std::optional<size_t> chosen;
      for (size_t k = 0; k < replicas_.size() && !chosen; ++k) {
        const size_t r = (next_replica_ + k) % replicas_.size();
        if (replicas_[r].alive && replicas_[r].running < replicas_[r].capacity) chosen = r;
      }
      if (!chosen) return;
      next_replica_ = *chosen + 1;
      const size_t s = pending_.front();
      pending_.pop_front();
      ++replicas_[*chosen].running;
      ++running_;
      shards_[s].replica = replicas_[*chosen].address;
      shards_[s].done = 0;
      threads_.emplace_back([this, s, r = *chosen] { Finish(s, r, Attempt(s, r)); });
    }
  }

  // Submits shard `s` to replica `r` and follows it. mu_ not held.
  Outcome Attempt(size_t s, size_t r) {
    Client& client = *replicas_[r].client;
    if (stop_) return {Outcome::kStopped, {}, {}};
    absl::StatusOr<v1::AuditJob> submitted = client.SubmitAudit(shards_[s].request.request);
    if (!submitted.ok()) {
      if (submitted.status().code() == absl::StatusCode::kResourceExhausted) {
        return {Outcome::kReplicaBusy, submitted.status(), {}};
      }
      return Classify(submitted.status());
    }
    const std::string id = submitted->id();
    absl::StatusOr<v1::AuditJob> job = client.WatchAudit(
        id, [&](const v1::AuditEvent& event) { OnEvent(s, r, event); },
        [this] { return stop_.load(); });
    if (!job.ok()) {
      // The job is left behind whatever comes next (the shard moves to
      // another replica, or the run ends): cancel it, best effort, so it
      // does not run on for nobody if the replica is still there.
      (void)client.CancelAudit(id, kCancelTimeout);
      if (!stop_) return Classify(job.status());
      return {Outcome::kStopped, {}, {}};
    }
    switch (job->state()) {
      case v1::JOB_SUCCEEDED:
        return {Outcome::kDone, {}, *std::move(job)};
      case v1::JOB_CANCELLED:  // not by this run: the server shut down, or an operator
        return {Outcome::kReplicaFailed,
                absl::UnavailableError(
                    absl::StrCat("job ", id, " was cancelled there: ", job->error())),
                {}};
      default:
        return {Outcome::kFatal,
                absl::InternalError(absl::StrCat("job ", id, " ", v1::JobState_Name(job->state()),
                                                 ": ", job->error())),
                {}};
    }
  }

  void OnEvent(size_t s, size_t r, const v1::AuditEvent& event) {
    if (!event.has_progress()) return;
    std::lock_guard<std::mutex> lock(mu_);
    Shard& shard = shards_[s];
    shard.done = event.progress().samples_done();
    if (event.progress().samples_total() > 0) shard.total = event.progress().samples_total();
    if (!options_.on_progress) return;
    FanoutProgress progress;
    progress.progress = event.progress();
    int64_t done = 0, total = 0;
    for (const Shard& each : shards_) {
      done += each.done;
      total += each.total;
    }
    progress.progress.set_samples_done(done);
    progress.progress.set_samples_total(total);
    progress.shard = static_cast<int64_t>(s);
    progress.shards = static_cast<int64_t>(shards_.size());
    progress.replica = replicas_[r].address;
    options_.on_progress(progress);
  }

  void Finish(size_t s, size_t r, Outcome outcome) {
    std::lock_guard<std::mutex> lock(mu_);
    --replicas_[r].running;
    --running_;
    Shard& shard = shards_[s];
    const std::string where =
        absl::StrCat("shard ", s, " of ", shards_.size(), " on ", replicas_[r].address);
    switch (outcome.kind) {
      case Outcome::kDone:
        shard.job = *std::move(outcome.job);
        *shard.job.mutable_report()->mutable_shard() = shard.request.shard;
        shard.done = shard.total;
        ++finished_;
        break;
      case Outcome::kReplicaFailed:
        if (replicas_[r].alive) {
          replicas_[r].alive = false;
          failures_.push_back(absl::StrCat(replicas_[r].address, ": ", outcome.status.ToString()));
        }
        shard.done = 0;
        pending_.push_front(s);
        if (options_.on_notice && !stop_) {
          options_.on_notice(absl::StrCat(
              where, " failed (", outcome.status.ToString(), "); ",
              AnyReplicaAlive() ? "resubmitting it to another replica" : "no replica left"));
        }
        break;
      case Outcome::kReplicaBusy:
        // Full with this run's own shards: wait for one of them rather than
        // fail (a single server would queue them). Full with other work:
        // the error a single server's caller gets.
        if (replicas_[r].running > 0) {
          replicas_[r].capacity = replicas_[r].running;
          pending_.push_front(s);
          shard.done = 0;
          break;
        }
        [[fallthrough]];
      case Outcome::kFatal:
        if (error_.ok()) {
          error_ = absl::Status(outcome.status.code(),
                                absl::StrCat(where, ": ", outcome.status.message()));
        }
        break;
      case Outcome::kStopped:
        break;
    }
    changed_.notify_all();
  }

  const FanoutOptions& options_;
  std::vector<ReplicaState> replicas_;
  std::vector<Shard> shards_;  // fixed once Run starts them

  std::mutex mu_;
  std::condition_variable changed_;
  std::deque<size_t> pending_;  // shard indexes to start, first first
  size_t next_replica_ = 0;
  size_t finished_ = 0;
  int running_ = 0;
  absl::Status error_;
  std::vector<std::string> failures_;  // of replicas, for the final error
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

}  // namespace

absl::StatusOr<FanoutResult> RunFannedOutAudit(const std::vector<Replica>& replicas,
                                               const v1::AuditRequest& request,
                                               const FanoutOptions& options) {
  if (replicas.empty()) return absl::InvalidArgumentError("no replicas to fan out to");
  FanoutRun run(replicas, options);
  return run.Run(request);
}

}  // namespace memaudit::client
