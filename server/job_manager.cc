#include "server/job_manager.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <random>

#include <google/protobuf/field_mask.pb.h>
#include <google/protobuf/util/field_mask_util.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/base/status_macros.h"
#include "core/text/utf8.h"
#include "server/request_memory.h"

namespace memaudit::server {
namespace {

int64_t NowUnixMs() { return absl::ToUnixMillis(absl::Now()); }

bool IsFinal(v1::JobState state) {
  return state == v1::JOB_SUCCEEDED || state == v1::JOB_FAILED || state == v1::JOB_CANCELLED;
}

absl::Status UnknownJob(const std::string& id) {
  return absl::NotFoundError(absl::StrCat("audit \"", id, "\" not found"));
}

template <typename Message>
google::protobuf::FieldMask AllFieldsBut(const char* excluded) {
  google::protobuf::FieldMask mask;
  const google::protobuf::Descriptor* descriptor = Message::descriptor();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    if (descriptor->field(i)->name() != excluded) mask.add_paths(descriptor->field(i)->name());
  }
  return mask;
}

// The job without per-sample reports, copied without copying them.
v1::AuditJob WithoutSamples(const v1::AuditJob& job) {
  using google::protobuf::util::FieldMaskUtil;
  static const auto* const kJob =
      new google::protobuf::FieldMask(AllFieldsBut<v1::AuditJob>("report"));
  static const auto* const kReport =
      new google::protobuf::FieldMask(AllFieldsBut<v1::AuditReport>("conditions"));
  static const auto* const kCondition =
      new google::protobuf::FieldMask(AllFieldsBut<v1::ConditionReport>("samples"));
  v1::AuditJob out;
  FieldMaskUtil::MergeMessageTo(job, *kJob, {}, &out);
  if (job.has_report()) {
    FieldMaskUtil::MergeMessageTo(job.report(), *kReport, {}, out.mutable_report());
    for (const v1::ConditionReport& condition : job.report().conditions()) {
      FieldMaskUtil::MergeMessageTo(condition, *kCondition, {},
                                    out.mutable_report()->add_conditions());
    }
  }
  return out;
}

// A rough per-event cost for the size cap (the vector entry and a progress
// snapshot).
constexpr int64_t kEventBytes = 96;

}  // namespace

// What a finished job holds in memory, for the history's size cap: its
// state (with the report), the samples kept outside a report, its events.
int64_t JobManager::FinishedJobBytes(const Job& job) {
  int64_t bytes = static_cast<int64_t>(job.state.ByteSizeLong()) +
                  kEventBytes * static_cast<int64_t>(job.events.size());
  for (const v1::SampleReport& sample : job.streamed) {
    bytes += static_cast<int64_t>(sample.ByteSizeLong());
  }
  return bytes;
}

JobManager::JobManager(ModelRegistry* registry, Metrics* metrics, JobManagerOptions options,
                       JobStore* store)
    : registry_(registry),
      metrics_(metrics),
      options_(options),
      store_(store),
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

absl::StatusOr<v1::AuditJob> JobManager::Submit(const v1::AuditRequest& request,
                                                const std::string& owner, const StopCheck& stop) {
  if (request.model().empty()) return absl::InvalidArgumentError("model: required");
  ASSIGN_OR_RETURN(std::shared_ptr<const LoadedModel> model, registry_->Get(request.model()));
  ASSIGN_OR_RETURN(AuditPlan plan,
                   PlanNoThrow([&] { return PlanAudit(request, std::move(model), stop); }));
  RETURN_IF_ERROR(options_.memory.Check(EstimateAudit(plan), "this audit"));
  // A caller gone (or past its deadline) while the request was planned never
  // learns the job's id: create nothing for it (a fan-out client has sent
  // the shard elsewhere meanwhile).
  RETURN_IF_ERROR(CheckStop(stop));
  auto job = std::make_shared<Job>();
  job->created = std::chrono::steady_clock::now();
  job->model_checksum = plan.model->checksum;
  job->owner = owner;
  job->state.set_owner(owner);
  job->plan = std::make_shared<const AuditPlan>(std::move(plan));
  job->state.set_id(NewId());
  job->state.set_state(v1::JOB_QUEUED);
  *job->state.mutable_request() = request;
  // Kept for GetAudit and ListAudits: without what this server cannot read.
  job->state.mutable_request()->DiscardUnknownFields();
  const size_t request_bytes = job->state.request().ByteSizeLong();
  if (request_bytes > kMaxStoredRequestBytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the audit request is ", request_bytes >> 20,
        " MiB; an audit's request is "
        "kept with its job and may be at most ",
        kMaxStoredRequestBytes >> 20, " MiB (split the conditions over several audits)"));
  }
  job->state.set_created_unix_ms(NowUnixMs());
  job->state.mutable_progress()->set_samples_total(job->plan->total_samples());
  job->state.mutable_progress()->set_phase(v1::AUDIT_PHASE_QUEUED);
  {
    absl::MutexLock lock(&mu_);
    if (active_ >= options_.max_concurrent_jobs + options_.max_queued_jobs) {
      return absl::ResourceExhaustedError(
          absl::StrCat("audit queue full (", options_.max_concurrent_jobs, " running, ",
                       options_.max_queued_jobs, " queued); retry later"));
    }
    job->sequence = next_sequence_++;
    jobs_[job->state.id()] = job;
    order_.push_back(job->state.id());
    ++active_;
  }
  // Saved before it is acknowledged: an accepted job survives a restart.
  if (store_ != nullptr) {
    if (absl::Status saved = store_->Insert(job->state, job->sequence, job->model_checksum);
        !saved.ok()) {
      absl::MutexLock lock(&mu_);
      jobs_.erase(job->state.id());
      order_.erase(std::find(order_.begin(), order_.end(), job->state.id()));
      --active_;
      return absl::UnavailableError(absl::StrCat("the audit was not accepted: ", saved.message()));
    }
  }
  if (absl::Status s = pool_->Submit([this, job] { Run(job); }); !s.ok()) {
    if (store_ != nullptr) (void)store_->Delete(job->state.id());
    absl::MutexLock lock(&mu_);
    jobs_.erase(job->state.id());
    order_.erase(std::find(order_.begin(), order_.end(), job->state.id()));
    --active_;
    return s;
  }
  absl::MutexLock lock(&mu_);
  return job->state;
}

absl::StatusOr<int> JobManager::Restore() {
  if (store_ == nullptr) return 0;
  ASSIGN_OR_RETURN(std::vector<StoredJob> stored, store_->LoadAll());
  absl::MutexLock lock(&mu_);
  for (StoredJob& entry : stored) {
    auto job = std::make_shared<Job>();
    job->created = std::chrono::steady_clock::now();
    job->sequence = entry.sequence;
    job->model_checksum = entry.model_checksum;
    job->state = std::move(entry.job);
    job->owner = job->state.owner();
    next_sequence_ = std::max(next_sequence_, entry.sequence + 1);
    const std::string id = job->state.id();
    if (IsFinal(job->state.state())) {
      // Samples back in their conditions (a report) or in streamed order.
      if (job->state.state() == v1::JOB_SUCCEEDED) {
        auto& conditions = *job->state.mutable_report()->mutable_conditions();
        for (int c = 0; c < conditions.size(); ++c) {
          for (v1::SampleReport& sample : entry.samples[c]) {
            *conditions[c].add_samples() = std::move(sample);
          }
        }
        for (const v1::ConditionReport& condition : job->state.report().conditions()) {
          for (int i = 0; i < condition.samples_size(); ++i) {
            job->events.push_back(
                {Event::Kind::kSample, std::nullopt, static_cast<int64_t>(job->events.size())});
          }
        }
      } else {
        for (auto& [condition, samples] : entry.samples) {
          for (v1::SampleReport& sample : samples) {
            job->streamed.push_back(std::move(sample));
            job->events.push_back({Event::Kind::kSample, std::nullopt,
                                   static_cast<int64_t>(job->streamed.size()) - 1});
          }
        }
      }
      job->events.push_back({Event::Kind::kFinished, std::nullopt, 0});
      job->bytes = FinishedJobBytes(*job);
      finished_bytes_ += job->bytes;
      jobs_[id] = job;
      order_.push_back(id);
      finished_.push_back(id);
      continue;
    }
    // Interrupted or queued: what it finished is reused; the rest reruns
    // from the first unfinished batch, planned when it runs.
    job->restored = true;
    const int64_t per_condition = job->state.request().samples_per_condition() > 0
                                      ? job->state.request().samples_per_condition()
                                      : kDefaultSamplesPerCondition;
    for (auto& [condition, report] : entry.conditions) {
      std::vector<v1::SampleReport>& samples = entry.samples[condition];
      const bool full = !job->state.request().early_only();
      if (full && static_cast<int64_t>(samples.size()) != per_condition) continue;
      for (v1::SampleReport& sample : samples) *report.add_samples() = std::move(sample);
      samples.clear();
      job->resume.conditions[condition] = std::move(report);
    }
    for (auto& [condition, samples] : entry.samples) {
      if (samples.empty() || job->resume.conditions.count(condition) > 0) continue;
      samples.resize(static_cast<size_t>(
          ReusableSamples(static_cast<int64_t>(samples.size()), per_condition)));
      job->resume.samples[condition] = std::move(samples);
    }
    // Watchers see the reused samples first, in report order.
    const int conditions = std::max(job->state.request().conditions_size(), 1);
    for (int64_t c = 0; c < conditions; ++c) {
      if (auto it = job->resume.conditions.find(c); it != job->resume.conditions.end()) {
        for (const v1::SampleReport& sample : it->second.samples()) job->streamed.push_back(sample);
        continue;
      }
      if (auto it = job->resume.samples.find(c); it != job->resume.samples.end()) {
        job->streamed.insert(job->streamed.end(), it->second.begin(), it->second.end());
      }
      break;  // conditions run in order: nothing after the first unfinished one
    }
    for (size_t i = 0; i < job->streamed.size(); ++i) {
      job->events.push_back({Event::Kind::kSample, std::nullopt, static_cast<int64_t>(i)});
    }
    job->resume.timing = job->state.progress().timing();
    job->state.set_state(v1::JOB_QUEUED);
    job->state.set_resumed(job->state.resumed() + 1);
    job->state.mutable_progress()->set_phase(v1::AUDIT_PHASE_QUEUED);
    job->state.mutable_progress()->set_samples_done(static_cast<int64_t>(job->streamed.size()));
    AddProgress(*job, job->state.progress());
    SaveState(*job);
    jobs_[id] = job;
    order_.push_back(id);
    to_resume_.push_back(job);
  }
  TrimHistory();
  return static_cast<int>(to_resume_.size());
}

void JobManager::ResumeInterrupted() {
  std::vector<std::shared_ptr<Job>> jobs;
  {
    absl::MutexLock lock(&mu_);
    jobs.swap(to_resume_);
    active_ += static_cast<int64_t>(jobs.size());
  }
  for (const std::shared_ptr<Job>& job : jobs) {
    // Accepted before the restart: the queue's bound, which turns away new
    // work, does not apply. Refused only by a shutdown begun meanwhile,
    // which must leave it resumable: back to Shutdown's list, or stopped
    // as Shutdown stops jobs once it has passed that list.
    if (absl::Status queued = pool_->SubmitAccepted([this, job] { Run(job); }); !queued.ok()) {
      absl::MutexLock lock(&mu_);
      --active_;
      if (!shutting_down_) {
        to_resume_.push_back(job);
      } else if (!IsFinal(job->state.state())) {
        Finish(*job, v1::JOB_CANCELLED, "server shutting down");
      }
    }
  }
}

void JobManager::AddProgress(Job& job, const v1::AuditProgress& progress) {
  *job.state.mutable_progress() = progress;
  job.events.push_back({Event::Kind::kProgress, progress, 0});
}

absl::StatusOr<std::shared_ptr<const AuditPlan>> JobManager::PlanRestored(const Job& job) {
  const v1::AuditRequest& request = job.state.request();
  absl::StatusOr<std::shared_ptr<const LoadedModel>> model = registry_->Get(request.model());
  if (!model.ok()) {
    return absl::Status(model.status().code(), absl::StrCat("cannot resume after the restart: ",
                                                            model.status().message()));
  }
  if ((*model)->checksum != job.model_checksum) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot resume after the restart: model \"", request.model(),
        "\" changed since the audit was submitted (checksum ", job.model_checksum, ", now ",
        (*model)->checksum, "); its finished samples are kept, submit it again for a new report"));
  }
  absl::StatusOr<AuditPlan> plan =
      PlanNoThrow([&] { return PlanAudit(request, *std::move(model)); });
  if (!plan.ok()) {
    return absl::Status(plan.status().code(),
                        absl::StrCat("cannot resume after the restart: ", plan.status().message()));
  }
  return std::make_shared<const AuditPlan>(*std::move(plan));
}

void JobManager::Run(const std::shared_ptr<Job>& job) {
  // Ends a job cancelled (or finished) while it waited; true if it did.
  auto ended_while_queued = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!job->cancel.load() && !IsFinal(job->state.state())) return false;
    if (!IsFinal(job->state.state())) Finish(*job, v1::JOB_CANCELLED, "cancelled while queued");
    --active_;  // its pool slot is free only now
    return true;
  };
  {
    absl::MutexLock lock(&mu_);
    if (ended_while_queued()) return;  // no planning for a job nobody waits for
  }
  absl::StatusOr<std::shared_ptr<const AuditPlan>> restored_plan;
  if (job->restored) restored_plan = PlanRestored(*job);
  std::shared_ptr<const AuditPlan> plan;
  {
    absl::MutexLock lock(&mu_);
    if (ended_while_queued()) return;
    if (job->restored) {
      if (!restored_plan.ok()) {
        Finish(*job, v1::JOB_FAILED, restored_plan.status().ToString());
        --active_;
        return;
      }
      job->plan = *std::move(restored_plan);
    }
    job->state.set_state(v1::JOB_RUNNING);
    v1::AuditProgress starting = job->state.progress();
    starting.set_phase(v1::AUDIT_PHASE_STARTING);
    AddProgress(*job, starting);
    SaveState(*job);
    plan = job->plan;
  }
  const double queued_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - job->created).count();
  const std::string& model = plan->model->network->config().name();
  AuditCallbacks callbacks;
  callbacks.progress = [this, job](const v1::AuditProgress& progress) {
    absl::MutexLock lock(&mu_);
    AddProgress(*job, progress);
  };
  callbacks.batch = [this, job, &model](int64_t condition, int64_t first,
                                        const std::vector<v1::SampleReport>& samples,
                                        const v1::AuditProgress& progress) -> absl::Status {
    // Saved before any watcher sees it.
    if (store_ != nullptr) {
      RETURN_IF_ERROR(store_->AddBatch(job->state.id(), condition, first, samples, progress));
    }
    for (const v1::SampleReport& sample : samples) {
      if (metrics_) metrics_->CountSampleVerdict(model, v1::Verdict_Name(sample.verdict()));
    }
    absl::MutexLock lock(&mu_);
    for (const v1::SampleReport& sample : samples) {
      job->streamed.push_back(sample);
      job->events.push_back(
          {Event::Kind::kSample, std::nullopt, static_cast<int64_t>(job->streamed.size()) - 1});
    }
    return absl::OkStatus();
  };
  if (store_ != nullptr) {
    callbacks.condition = [this, job](int64_t condition, const v1::ConditionReport& report,
                                      const v1::AuditProgress& progress) {
      return store_->AddCondition(job->state.id(), condition, report, progress);
    };
  }
  callbacks.spectrum_seconds = [this](SpectrumMethod method, double seconds) {
    if (metrics_) metrics_->ObserveSpectrum(SpectrumMethodName(method), seconds);
  };
  const AuditResume resume = std::move(job->resume);
  absl::StatusOr<v1::AuditReport> report = RunAudit(
      *plan,
      [job]() -> absl::Status {
        return job->cancel.load() ? absl::CancelledError("audit cancelled") : absl::OkStatus();
      },
      callbacks, resume);
  absl::MutexLock lock(&mu_);
  --active_;
  if (report.ok()) {
    report->mutable_timing()->set_queued_seconds(queued_seconds);
    *job->state.mutable_report() = *std::move(report);
    job->streamed.clear();  // the report holds every sample
    job->streamed.shrink_to_fit();
    if (metrics_) metrics_->CountAudit(model, v1::Verdict_Name(job->state.report().verdict()));
    Finish(*job, v1::JOB_SUCCEEDED, "");
  } else if (report.status().code() == absl::StatusCode::kCancelled) {
    Finish(*job, v1::JOB_CANCELLED, std::string(report.status().message()));
  } else {
    Finish(*job, v1::JOB_FAILED, report.status().ToString());
  }
}

void JobManager::Finish(Job& job, v1::JobState state, const std::string& error) {
  // Stopped by a shutdown, not by its caller: the store keeps it as it was,
  // to resume when a server starts on the same state directory.
  const bool resumable =
      store_ != nullptr && shutting_down_ && state == v1::JOB_CANCELLED && !job.cancelled_by_caller;
  job.state.set_state(state);
  job.state.set_error(resumable ? "server shutting down; the audit resumes when a server starts "
                                  "on the same --state_dir"
                                : ReplaceInvalidUtf8(error));  // may quote a model's bytes
  job.state.set_finished_unix_ms(NowUnixMs());
  job.state.mutable_progress()->set_phase(v1::AUDIT_PHASE_DONE);
  job.events.push_back({Event::Kind::kFinished, std::nullopt, 0});
  job.plan.reset();  // the model version it pinned may now be freed
  job.bytes = FinishedJobBytes(job);
  if (metrics_) metrics_->CountJobFinished(v1::JobState_Name(state));
  if (resumable) return;  // not history: evicting it would delete it from the store
  finished_bytes_ += job.bytes;
  finished_.push_back(job.state.id());
  SaveState(job);
  TrimHistory();
}

void JobManager::SaveState(const Job& job) {
  if (store_ == nullptr) return;
  if (absl::Status saved = store_->UpdateState(job.state); !saved.ok()) {
    std::fprintf(stderr, "memaudit-server: job %s: %s\n", job.state.id().c_str(),
                 std::string(saved.message()).c_str());
  }
}

void JobManager::TrimHistory() {
  int64_t evicted = 0;
  const int64_t oldest_kept_ms =
      options_.max_finished_job_age > absl::ZeroDuration()
          ? NowUnixMs() - absl::ToInt64Milliseconds(options_.max_finished_job_age)
          : std::numeric_limits<int64_t>::min();
  auto too_old = [&](const std::string& id) {
    auto it = jobs_.find(id);
    return it != jobs_.end() && it->second->state.finished_unix_ms() < oldest_kept_ms;
  };
  while (finished_.size() > 1 &&
         (static_cast<int64_t>(finished_.size()) > options_.max_finished_jobs_kept ||
          finished_bytes_ > options_.max_finished_job_bytes || too_old(finished_.front()))) {
    const std::string id = finished_.front();
    finished_.pop_front();
    auto it = jobs_.find(id);
    if (it != jobs_.end()) {
      finished_bytes_ -= it->second->bytes;
      jobs_.erase(it);
      order_.erase(std::find(order_.begin(), order_.end(), id));
      ++evicted;
      if (store_ != nullptr) {
        if (absl::Status deleted = store_->Delete(id); !deleted.ok()) {
          std::fprintf(stderr, "memaudit-server: job %s: %s\n", id.c_str(),
                       std::string(deleted.message()).c_str());
        }
      }
    }
  }
  if (evicted > 0 && metrics_) metrics_->CountJobsEvicted(evicted);
}

absl::StatusOr<v1::AuditJob> JobManager::Get(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return UnknownJob(id);
  return it->second->state;
}

absl::StatusOr<JobManager::ListPage> JobManager::List(const ListQuery& query) const {
  if (query.page_size < 0 || query.page_size > kMaxListPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: ", query.page_size, " is not in [0, ", kMaxListPageSize, "]"));
  }
  const int page_size = query.page_size == 0 ? kDefaultListPageSize : query.page_size;
  // The token is the sequence number of the last job of the previous page.
  uint64_t before = std::numeric_limits<uint64_t>::max();
  if (!query.page_token.empty() && (!absl::SimpleAtoi(query.page_token, &before) || before == 0)) {
    return absl::InvalidArgumentError(
        "page_token: not a token from ListAuditsResponse.next_page_token");
  }
  ListPage page;
  size_t bytes = 0;
  absl::MutexLock lock(&mu_);
  for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
    const Job& job = *jobs_.at(*it);
    if (job.sequence >= before) continue;
    if (query.owner.has_value() && job.owner != *query.owner) continue;
    if (static_cast<int>(page.jobs.size()) == page_size) {
      page.next_page_token = absl::StrCat(before);
      break;
    }
    v1::AuditJob listed = WithoutSamples(job.state);
    const size_t size = listed.ByteSizeLong();
    if (!page.jobs.empty() && bytes + size > kMaxListPageBytes) {
      page.next_page_token = absl::StrCat(before);
      break;
    }
    bytes += size;
    before = job.sequence;
    page.jobs.push_back(std::move(listed));
  }
  return page;
}

absl::StatusOr<v1::AuditJob> JobManager::Cancel(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return UnknownJob(id);
  std::shared_ptr<Job> job = it->second;  // Finish may trim it from the map
  job->cancel = true;
  if (!IsFinal(job->state.state())) job->cancelled_by_caller = true;
  if (job->state.state() == v1::JOB_QUEUED) {
    Finish(*job, v1::JOB_CANCELLED, "cancelled while queued");
  }
  return job->state;
}

v1::AuditEvent JobManager::Materialize(const Job& job, const Event& event,
                                       const std::vector<int64_t>& condition_starts) const {
  v1::AuditEvent out;
  switch (event.kind) {
    case Event::Kind::kProgress:
      *out.mutable_progress() = *event.progress;
      break;
    case Event::Kind::kSample: {
      if (job.state.state() == v1::JOB_SUCCEEDED) {
        // The report holds the samples in the order they were streamed.
        const auto next =
            std::upper_bound(condition_starts.begin(), condition_starts.end(), event.sample);
        const size_t c = static_cast<size_t>(next - condition_starts.begin()) - 1;
        *out.mutable_sample() = job.state.report()
                                    .conditions(static_cast<int>(c))
                                    .samples(static_cast<int>(event.sample - condition_starts[c]));
      } else if (event.sample < static_cast<int64_t>(job.streamed.size())) {
        *out.mutable_sample() = job.streamed[event.sample];
      }
      break;
    }
    case Event::Kind::kFinished:
      *out.mutable_finished() = job.state;
      break;
  }
  return out;
}

absl::StatusOr<JobManager::JobRef> JobManager::Find(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return UnknownJob(id);
  return JobRef(it->second);
}

absl::StatusOr<std::vector<v1::AuditEvent>> JobManager::Events(const std::string& id, size_t from,
                                                               absl::Duration timeout,
                                                               bool* finished) const {
  ASSIGN_OR_RETURN(const JobRef job, Find(id));
  return Events(job, from, timeout, finished);
}

std::vector<v1::AuditEvent> JobManager::Events(const JobRef& job, size_t from,
                                               absl::Duration timeout, bool* finished) const {
  absl::MutexLock lock(&mu_);
  auto ready = [&job, from]() { return job->events.size() > from; };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  *finished = IsFinal(job->state.state());
  // Where each condition's samples start in report order.
  std::vector<int64_t> condition_starts;
  int64_t start = 0;
  for (const v1::ConditionReport& condition : job->state.report().conditions()) {
    condition_starts.push_back(start);
    start += condition.samples_size();
  }
  std::vector<v1::AuditEvent> events;
  for (size_t i = from; i < job->events.size(); ++i) {
    events.push_back(Materialize(*job, job->events[i], condition_starts));
  }
  return events;
}

absl::StatusOr<v1::AuditJob> JobManager::Await(const std::string& id,
                                               absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return UnknownJob(id);
  std::shared_ptr<Job> job = it->second;
  auto ended = [&job]() { return IsFinal(job->state.state()); };
  mu_.AwaitWithTimeout(absl::Condition(&ended), timeout);
  return job->state;
}

void JobManager::Shutdown(absl::Duration grace) {
  pool_->Close();
  const absl::Time deadline = absl::Now() + grace;
  {
    absl::MutexLock lock(&mu_);
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return active_ == 0; };
    mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
    shutting_down_ = true;
    // Restored jobs never queued (shut down before the models loaded).
    for (const std::shared_ptr<Job>& job : to_resume_) {
      if (!IsFinal(job->state.state())) Finish(*job, v1::JOB_CANCELLED, "server shutting down");
    }
    to_resume_.clear();
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

JobGauges JobManager::gauges() const {
  JobGauges gauges;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, job] : jobs_) {
    gauges.queued += job->state.state() == v1::JOB_QUEUED ? 1 : 0;
    gauges.running += job->state.state() == v1::JOB_RUNNING ? 1 : 0;
  }
  gauges.finished = static_cast<int64_t>(finished_.size());
  gauges.finished_bytes = finished_bytes_;
  if (store_ != nullptr) {
    gauges.stored_jobs = static_cast<int64_t>(jobs_.size());
    gauges.store_bytes = store_->bytes();
  }
  return gauges;
}

}  // namespace memaudit::server
