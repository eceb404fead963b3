#include "job_manager.h"

#include <algorithm>
#include <chrono>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "audit_runner.h"

namespace memaudit::server {
namespace {

int64_t NowUnixMs() { return absl::ToUnixMillis(absl::Now()); }

// RunAudit with LibTorch exceptions (e.g. out of memory) turned into a
// failed job instead of a terminated server.
absl::StatusOr<v1::AuditReport> RunAuditNoThrow(const v1::AuditRequest& request,
                                                const LoadedModel& model, const StopCheck& stop,
                                                const AuditCallbacks& callbacks) {
  try {
    return RunAudit(request, model, stop, callbacks);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("unexpected error: ", e.what()));
  }
}

bool IsFinal(v1::JobState state) {
  return state == v1::JOB_SUCCEEDED || state == v1::JOB_FAILED || state == v1::JOB_CANCELLED;
}

}  // namespace

JobManager::JobManager(ModelRegistry* registry, Metrics* metrics, JobManagerOptions options)
    : registry_(registry),
      metrics_(metrics),
      options_(options),
      pool_(std::make_unique<WorkerPool>("audit jobs", options.max_concurrent_jobs,
                                         options.max_queued_jobs)) {
  std::random_device random;
  next_id_ = (static_cast<uint64_t>(random()) << 32) ^ random();
}

JobManager::~JobManager() { Shutdown(absl::ZeroDuration()); }

std::string JobManager::NewId() {
  return absl::StrFormat("audit-%012x",
                         next_id_.fetch_add(0x9E3779B97F4A7C15ull) & 0xFFFFFFFFFFFFull);
}

absl::StatusOr<v1::AuditJob> JobManager::Submit(const v1::AuditRequest& request) {
  if (request.model().empty()) return absl::InvalidArgumentError("model: required");
  auto model = registry_->Get(request.model());
  if (!model.ok()) return model.status();
  if (absl::Status s = ValidateAuditRequest(request, **model); !s.ok()) return s;
  auto job = std::make_shared<Job>();
  job->created = std::chrono::steady_clock::now();
  job->state.set_id(NewId());
  job->state.set_state(v1::JOB_QUEUED);
  *job->state.mutable_request() = request;
  job->state.set_created_unix_ms(NowUnixMs());
  const int64_t per_condition = request.samples_per_condition() > 0
                                    ? request.samples_per_condition()
                                    : kDefaultSamplesPerCondition;
  job->state.mutable_progress()->set_samples_total(per_condition *
                                                   std::max(1, request.conditions_size()));
  job->state.mutable_progress()->set_phase("queued");
  {
    absl::MutexLock lock(&mu_);
    if (active_ >= options_.max_concurrent_jobs + options_.max_queued_jobs) {
      return absl::ResourceExhaustedError(
          absl::StrCat("audit queue full (", options_.max_concurrent_jobs, " running, ",
                       options_.max_queued_jobs, " queued); retry later"));
    }
    jobs_[job->state.id()] = job;
    order_.push_back(job->state.id());
    ++active_;
  }
  if (absl::Status s = pool_->Submit([this, job] { Run(job); }); !s.ok()) {
    absl::MutexLock lock(&mu_);
    jobs_.erase(job->state.id());
    order_.erase(std::find(order_.begin(), order_.end(), job->state.id()));
    --active_;
    return s;
  }
  absl::MutexLock lock(&mu_);
  return job->state;
}

void JobManager::Run(const std::shared_ptr<Job>& job) {
  v1::AuditRequest request;
  {
    absl::MutexLock lock(&mu_);
    if (job->cancel.load() || IsFinal(job->state.state())) {
      if (!IsFinal(job->state.state())) Finish(*job, v1::JOB_CANCELLED, "cancelled while queued");
      return;
    }
    job->state.set_state(v1::JOB_RUNNING);
    job->state.mutable_progress()->set_phase("starting");
    request = job->state.request();
  }
  const double queued_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - job->created).count();
  auto model = registry_->Get(request.model());
  absl::StatusOr<v1::AuditReport> report = absl::UnknownError("not run");
  if (!model.ok()) {
    report = model.status();
  } else {
    AuditCallbacks callbacks;
    callbacks.progress = [this, job](const v1::AuditProgress& progress) {
      absl::MutexLock lock(&mu_);
      *job->state.mutable_progress() = progress;
      v1::AuditEvent event;
      *event.mutable_progress() = progress;
      job->events.push_back(std::move(event));
    };
    callbacks.sample = [this, job, &request](const v1::SampleReport& sample) {
      if (metrics_)
        metrics_->CountSampleVerdict(request.model(), v1::Verdict_Name(sample.verdict()));
      absl::MutexLock lock(&mu_);
      v1::AuditEvent event;
      *event.mutable_sample() = sample;
      job->events.push_back(std::move(event));
    };
    callbacks.spectrum_seconds = [this](const std::string& method, double seconds) {
      if (metrics_) metrics_->ObserveSpectrum(method, seconds);
    };
    report = RunAuditNoThrow(
        request, **model,
        [job]() -> absl::Status {
          return job->cancel.load() ? absl::CancelledError("audit cancelled") : absl::OkStatus();
        },
        callbacks);
  }
  absl::MutexLock lock(&mu_);
  if (report.ok()) {
    report->mutable_timing()->set_queued_seconds(queued_seconds);
    *job->state.mutable_report() = *std::move(report);
    job->state.mutable_progress()->set_phase("done");
    if (metrics_)
      metrics_->CountAudit(request.model(), v1::Verdict_Name(job->state.report().verdict()));
    Finish(*job, v1::JOB_SUCCEEDED, "");
  } else if (report.status().code() == absl::StatusCode::kCancelled) {
    Finish(*job, v1::JOB_CANCELLED, std::string(report.status().message()));
  } else {
    Finish(*job, v1::JOB_FAILED, report.status().ToString());
  }
}

void JobManager::Finish(Job& job, v1::JobState state, const std::string& error) {
  job.state.set_state(state);
  job.state.set_error(error);
  job.state.set_finished_unix_ms(NowUnixMs());
  v1::AuditEvent event;
  *event.mutable_finished() = job.state;
  job.events.push_back(std::move(event));
  --active_;
  if (metrics_) metrics_->CountJobFinished(v1::JobState_Name(state));
  TrimHistory();
}

void JobManager::TrimHistory() {
  int64_t finished = 0;
  for (const auto& id : order_) finished += IsFinal(jobs_[id]->state.state()) ? 1 : 0;
  for (auto it = order_.begin();
       it != order_.end() && finished > options_.max_finished_jobs_kept;) {
    if (IsFinal(jobs_[*it]->state.state())) {
      jobs_.erase(*it);
      it = order_.erase(it);
      --finished;
    } else {
      ++it;
    }
  }
}

absl::StatusOr<v1::AuditJob> JobManager::Get(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("audit \"", id, "\" not found"));
  return it->second->state;
}

std::vector<v1::AuditJob> JobManager::List() const {
  std::vector<v1::AuditJob> list;
  absl::MutexLock lock(&mu_);
  for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
    v1::AuditJob job = jobs_.at(*it)->state;
    for (v1::ConditionReport& condition : *job.mutable_report()->mutable_conditions()) {
      condition.clear_samples();
    }
    list.push_back(std::move(job));
  }
  return list;
}

absl::StatusOr<v1::AuditJob> JobManager::Cancel(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("audit \"", id, "\" not found"));
  std::shared_ptr<Job> job = it->second;  // Finish may trim it from the map
  job->cancel = true;
  if (job->state.state() == v1::JOB_QUEUED) {
    Finish(*job, v1::JOB_CANCELLED, "cancelled while queued");
  }
  return job->state;
}

absl::StatusOr<std::vector<v1::AuditEvent>> JobManager::Events(const std::string& id, size_t from,
                                                               absl::Duration timeout,
                                                               bool* finished) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("audit \"", id, "\" not found"));
  std::shared_ptr<Job> job = it->second;
  auto ready = [&job, from]() { return job->events.size() > from; };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  *finished = IsFinal(job->state.state());
  std::vector<v1::AuditEvent> events;
  for (size_t i = from; i < job->events.size(); ++i) events.push_back(job->events[i]);
  return events;
}

void JobManager::Shutdown(absl::Duration grace) {
  pool_->Close();
  const absl::Time deadline = absl::Now() + grace;
  {
    absl::MutexLock lock(&mu_);
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return active_ == 0; };
    mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
    std::vector<std::shared_ptr<Job>> all;
    for (auto& [id, job] : jobs_) all.push_back(job);
    for (const std::shared_ptr<Job>& job : all) {
      job->cancel = true;
      if (job->state.state() == v1::JOB_QUEUED) {
        Finish(*job, v1::JOB_CANCELLED, "server shutting down");
      }
    }
  }
  // Joins (running jobs stop at their next stop check) but keeps the pool
  // object: late calls see a closed pool, not a destroyed one.
  pool_->Join();
}

int64_t JobManager::queued() const { return pool_->queued(); }
int64_t JobManager::running() const { return pool_->running(); }

}  // namespace memaudit::server
