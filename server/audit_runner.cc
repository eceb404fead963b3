#include "server/audit_runner.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <optional>

#include "absl/strings/str_cat.h"
#include "core/audit/sample_curvature.h"
#include "core/base/status_macros.h"
#include "core/early/calibration.h"
#include "core/early/early_metrics.h"
#include "core/model/sampler.h"
#include "core/verdict/verdict.h"
#include "server/request_memory.h"
#include "server/request_options.h"

namespace memaudit::server {
namespace {

// Samples measured per MeasureSamples call: a progress event and a stop
// check at least this often, with network calls still batched.
constexpr int64_t kSamplesPerBatch = kAuditSamplesPerBatch;

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void FillPolicyUsed(const ResolvedPolicy& policy, v1::PolicyUsed* used) {
  used->set_max_positive_eigenvalues(policy.max_positive_eigenvalues);
  used->set_memorized_width(policy.memorized_width);
  used->set_partial_width(policy.partial_width);
  used->set_data_scale(policy.data_scale);
  used->set_condition_memorized_fraction(policy.condition_memorized_fraction);
  used->set_rule(VerdictRuleName(policy.rule));
  used->set_spacing(policy.spacing);
  used->set_memorized_radius(policy.memorized_radius);
  used->set_partial_radius(policy.partial_radius);
  used->set_memorized_noise_radius(policy.memorized_noise_radius);
  used->set_partial_noise_radius(policy.partial_noise_radius);
  used->set_model_memorized_fraction(policy.model_memorized_fraction);
}

// The condition's mean of `metric` (a conditional one, not the combined
// score), when its report carries it: conditions measured by an earlier
// version of the server (a resumed job) may not.
std::optional<double> EarlyMean(const v1::EarlyMetricsResponse& early, EarlyMetric metric) {
  auto mean = [](bool has, const v1::EarlyMetricValues& values) -> std::optional<double> {
    if (!has || values.values_size() == 0) return std::nullopt;
    return values.mean();
  };
  switch (metric) {
    case EarlyMetric::kWenNoiseDifference:
      return mean(early.has_wen_noise_difference(), early.wen_noise_difference());
    case EarlyMetric::kJeonSharpness:
      return mean(early.has_jeon_sharpness(), early.jeon_sharpness());
    case EarlyMetric::kAnisotropyNorm:
      return mean(early.has_anisotropy_norm(), early.anisotropy_norm());
    case EarlyMetric::kAnisotropyAlignment:
      return mean(early.has_anisotropy_alignment(), early.anisotropy_alignment());
    default:
      return std::nullopt;  // unconditional metrics are refused by PlanAudit
  }
}

// Sets each condition's early_outlier_z from `metric` (its per-condition
// mean; for "anisotropy", the combined score of the pair's means) when at
// least kMinOutlierPopulation conditions carry it. A condition without the
// metric gets no score.
void ScoreEarlyOutliers(EarlyMetric metric, v1::AuditReport* report) {
  const bool combined = metric == EarlyMetric::kAnisotropy;
  std::vector<double> means, alignments;
  std::vector<v1::ConditionReport*> scored;
  for (v1::ConditionReport& condition : *report->mutable_conditions()) {
    if (!condition.has_early() || !condition.early().conditional()) continue;
    const std::optional<double> value =
        EarlyMean(condition.early(), combined ? EarlyMetric::kAnisotropyNorm : metric);
    const std::optional<double> alignment =
        combined ? EarlyMean(condition.early(), EarlyMetric::kAnisotropyAlignment) : 0.0;
    if (!value.has_value() || !alignment.has_value()) continue;
    means.push_back(*value);
    alignments.push_back(*alignment);
    scored.push_back(&condition);
  }
  const std::vector<double> z = LabelFreeOutlierScores(metric, means, alignments);
  for (size_t i = 0; i < z.size(); ++i) scored[i]->set_early_outlier_z(z[i]);
}

// One audit's state while it runs.
class AuditRun {
 public:
  AuditRun(const AuditPlan& plan, const StopCheck& stop, const AuditCallbacks& callbacks,
           const AuditResume& resume)
      : plan_(plan), model_(*plan.model), stop_(stop), callbacks_(callbacks), resume_(resume) {}

  absl::StatusOr<v1::AuditReport> Run() {
    v1::AuditReport report;
    report.set_model(model_.network->config().name());
    report.set_device(model_.network->device().str());
    report.set_model_checksum(model_.checksum);
    FillPolicyUsed(model_.policy, report.mutable_policy());
    for (size_t c = 0; c < plan_.conditions.size(); ++c) {
      RETURN_IF_ERROR(CheckStop(stop_));
      const int64_t index = static_cast<int64_t>(c);
      if (auto finished = resume_.conditions.find(index); finished != resume_.conditions.end()) {
        *report.add_conditions() = finished->second;
        done_ += plan_.samples_per_condition;
        continue;
      }
      // A prompt is encoded here, once for all of its samples and metrics.
      ASSIGN_OR_RETURN(const ConditionPlan condition,
                       EncodePrompt(plan_.conditions[c], *model_.denoiser));
      v1::ConditionReport* condition_report = report.add_conditions();
      *condition_report->mutable_condition() = condition.condition;
      condition_report->set_label(condition.label);
      if (plan_.mode == AuditPlan::Mode::kFull) {
        RETURN_IF_ERROR(MeasureCondition(index, condition, condition_report));
      }
      if (plan_.early.has_value()) RETURN_IF_ERROR(EarlyMetrics(condition, condition_report));
      if (callbacks_.condition) {
        RETURN_IF_ERROR(callbacks_.condition(
            index, *condition_report, ProgressNow(v1::AUDIT_PHASE_MEASURED, condition.label)));
      }
    }
    ScoreEarlyOutliers(plan_.label_free_metric, &report);
    Judge(&report);
    *report.mutable_timing() = TimingNow();
    return report;
  }

 private:
  // This run's time plus what the stored work took (AuditResume::timing).
  v1::AuditTiming TimingNow() const {
    v1::AuditTiming timing;
    timing.set_total_seconds(resume_.timing.total_seconds() + SecondsSince(start_));
    timing.set_sampling_seconds(resume_.timing.sampling_seconds() + sampling_seconds_);
    timing.set_curvature_seconds(resume_.timing.curvature_seconds() + curvature_seconds_);
    return timing;
  }

  v1::AuditProgress ProgressNow(v1::AuditPhase phase, const std::string& condition) const {
    v1::AuditProgress progress;
    progress.set_samples_done(done_);
    progress.set_samples_total(plan_.total_samples());
    progress.set_phase(phase);
    progress.set_condition(condition);
    *progress.mutable_timing() = TimingNow();
    return progress;
  }
  void Progress(v1::AuditPhase phase, const std::string& condition) {
    if (callbacks_.progress) callbacks_.progress(ProgressNow(phase, condition));
  }

  static void Count(v1::Verdict verdict, v1::ConditionReport* report) {
    switch (verdict) {
      case v1::MEMORIZED:
        report->set_memorized(report->memorized() + 1);
        break;
      case v1::PARTIAL:
        report->set_partial(report->partial() + 1);
        break;
      default:
        report->set_not_memorized(report->not_memorized() + 1);
        break;
    }
  }

  absl::Status MeasureCondition(int64_t index, const ConditionPlan& condition,
                                v1::ConditionReport* report) {
    const ReferenceSet* reference = model_.reference ? &*model_.reference : nullptr;
    const SpectrumMethod method =
        ResolveSpectrumMethod(plan_.curvature.method, model_.network->sample_numel(),
                              plan_.curvature.max_dense_dimension);
    int64_t reused = 0;
    if (auto stored = resume_.samples.find(index); stored != resume_.samples.end()) {
      reused =
          ReusableSamples(static_cast<int64_t>(stored->second.size()), plan_.samples_per_condition);
      for (int64_t i = 0; i < reused; ++i) {
        const v1::SampleReport& sample = stored->second[static_cast<size_t>(i)];
        *report->add_samples() = sample;
        Count(sample.verdict(), report);
      }
      done_ += reused;
    }
    for (int64_t first = reused; first < plan_.samples_per_condition; first += kSamplesPerBatch) {
      RETURN_IF_ERROR(CheckStop(stop_));
      const int64_t count = std::min(kSamplesPerBatch, plan_.samples_per_condition - first);
      Clock::time_point phase_start = Clock::now();
      std::optional<MeasurePhase> phase;
      int64_t spectra_done = 0;
      auto on_progress = [&](const SampleCurvatureProgress& p) {
        const double elapsed = SecondsSince(phase_start);
        phase_start = Clock::now();
        if (p.phase == MeasurePhase::kSampling) {
          sampling_seconds_ += elapsed;
        } else {
          curvature_seconds_ += elapsed;
          const int64_t spectra = p.done - spectra_done;
          spectra_done = p.done;
          for (int64_t k = 0; callbacks_.spectrum_seconds && k < spectra; ++k) {
            callbacks_.spectrum_seconds(method, elapsed / static_cast<double>(spectra));
          }
        }
        if (phase != p.phase) {
          phase = p.phase;
          Progress(p.phase == MeasurePhase::kSampling ? v1::AUDIT_PHASE_SAMPLING
                                                      : v1::AUDIT_PHASE_CURVATURE,
                   condition.label);
        }
      };
      ASSIGN_OR_RETURN(std::vector<SampleCurvature> measured,
                       MeasureSamples(*model_.denoiser, ConsecutiveSeeds(plan_.seed + first, count),
                                      RepeatCondition(condition, count), plan_.curvature, reference,
                                      stop_, on_progress));
      std::vector<v1::SampleReport> batch(measured.size());
      for (size_t i = 0; i < measured.size(); ++i) {
        ToSampleReport(measured[i], model_.policy, &batch[i]);
        Count(batch[i].verdict(), report);
        *report->add_samples() = batch[i];
        ++done_;
      }
      const v1::AuditProgress measured_progress =
          ProgressNow(v1::AUDIT_PHASE_MEASURED, condition.label);
      if (callbacks_.batch) {
        RETURN_IF_ERROR(callbacks_.batch(index, first, batch, measured_progress));
      }
      if (callbacks_.progress) callbacks_.progress(measured_progress);
    }
    // A prompt's token attribution over all of the condition's samples: per
    // sample a forward pass of the prompt and each of its tokens deleted
    // and a forward and backward pass for the gradient (counted as
    // curvature time).
    const Clock::time_point attribution_start = Clock::now();
    // It explains a verdict; it never costs one: a failure is recorded in
    // the report and the audit goes on (a cancel or deadline still ends it).
    // Its calls are no larger than the sampling's (a batch of samples, two
    // rows each under guidance): it never needs more memory than the audit
    // already had.
    const SamplerOptions& sampler = plan_.curvature.sampler;
    const int64_t sampling_rows = std::min(kSamplesPerBatch, plan_.samples_per_condition) *
                                  SamplingRowsPerSample(*model_.network, sampler);
    absl::StatusOr<std::optional<v1::TokenAttribution>> attribution = AttributePromptTokens(
        condition, *model_.denoiser, ConsecutiveSeeds(plan_.seed, plan_.samples_per_condition),
        sampler, stop_, sampling_rows);
    if (!attribution.ok()) {
      RETURN_IF_ERROR(CheckStop(stop_));
      report->mutable_token_attribution()->set_unavailable(
          std::string(attribution.status().message()));
    } else if (attribution->has_value()) {
      *report->mutable_token_attribution() = **std::move(attribution);
    }
    curvature_seconds_ += SecondsSince(attribution_start);
    report->set_verdict(ToProtoVerdict(JudgeCondition(report->memorized(), report->partial(),
                                                      report->samples_size(), model_.policy)));
    return absl::OkStatus();
  }

  absl::Status EarlyMetrics(const ConditionPlan& condition, v1::ConditionReport* report) {
    Progress(v1::AUDIT_PHASE_EARLY_METRICS, condition.label);
    const int64_t count = plan_.samples_per_condition;
    ASSIGN_OR_RETURN(const EarlyMetricSamples metrics,
                     ComputeEarlyMetrics(*model_.denoiser, ConsecutiveSeeds(plan_.seed, count),
                                         RepeatCondition(condition, count), *plan_.early, stop_));
    ToEarlyMetricsProto(metrics, report->mutable_early());
    if (plan_.mode == AuditPlan::Mode::kEarlyCalibrated) {
      const EarlyMetric metric = *model_.policy.early_metric;
      const std::vector<double> values = EarlyMetricValues(metrics, metric);
      if (values.empty()) {
        return absl::FailedPreconditionError(
            absl::StrCat("verdict_policy.early_metric \"", EarlyMetricName(metric),
                         "\" is not available for condition ", condition.label,
                         EarlyMetricInfoOf(metric).conditional
                             ? " (it compares a real condition with the null one)"
                             : " (it is for unconditional generation)"));
      }
      const bool memorized = Mean(values) >= model_.policy.early_threshold;
      report->set_verdict(memorized ? v1::MEMORIZED : v1::NOT_MEMORIZED);
    }
    if (plan_.mode != AuditPlan::Mode::kFull) {
      done_ += count;
      Progress(v1::AUDIT_PHASE_MEASURED, condition.label);
    }
    return absl::OkStatus();
  }

  // Condition verdicts of label-free early audits, and the model verdict.
  void Judge(v1::AuditReport* report) const {
    Verdict worst = Verdict::kNotMemorized;
    int64_t memorized_samples = 0, total_samples = 0;
    for (v1::ConditionReport& condition : *report->mutable_conditions()) {
      if (plan_.mode == AuditPlan::Mode::kEarlyLabelFree) {
        const bool outlier =
            condition.has_early_outlier_z() && condition.early_outlier_z() >= kOutlierZThreshold;
        condition.set_verdict(outlier ? v1::MEMORIZED : v1::NOT_MEMORIZED);
      }
      const Verdict verdict = condition.verdict() == v1::MEMORIZED ? Verdict::kMemorized
                              : condition.verdict() == v1::PARTIAL ? Verdict::kPartial
                                                                   : Verdict::kNotMemorized;
      worst = std::max(worst, verdict);
      memorized_samples += condition.memorized();
      total_samples += condition.samples_size();
    }
    report->set_memorized_samples(memorized_samples);
    report->set_total_samples(total_samples);
    report->set_memorized_fraction(
        total_samples > 0 ? static_cast<double>(memorized_samples) / total_samples : 0.0);
    switch (plan_.mode) {
      case AuditPlan::Mode::kFull:
        worst = JudgeModel(worst, memorized_samples, total_samples, model_.policy);
        break;
      case AuditPlan::Mode::kEarlyCalibrated:
        report->mutable_policy()->set_early_rule(
            absl::StrCat("calibrated: ", EarlyMetricName(*model_.policy.early_metric),
                         " >= ", model_.policy.early_threshold));
        break;
      case AuditPlan::Mode::kEarlyLabelFree:
        report->mutable_policy()->set_early_rule(
            absl::StrCat("label-free: ", EarlyMetricName(plan_.label_free_metric),
                         " outlier z >= ", kOutlierZThreshold));
        break;
    }
    report->set_verdict(ToProtoVerdict(worst));
  }

  const AuditPlan& plan_;
  const LoadedModel& model_;
  const StopCheck& stop_;
  const AuditCallbacks& callbacks_;
  const AuditResume& resume_;
  const Clock::time_point start_ = Clock::now();
  int64_t done_ = 0;
  double sampling_seconds_ = 0, curvature_seconds_ = 0;
};

}  // namespace

int64_t ReusableSamples(int64_t stored, int64_t samples_per_condition) {
  if (stored >= samples_per_condition) return samples_per_condition;
  return stored - stored % kSamplesPerBatch;
}

absl::StatusOr<v1::AuditReport> RunAudit(const AuditPlan& plan, const StopCheck& stop,
                                         const AuditCallbacks& callbacks,
                                         const AuditResume& resume) {
  try {
    return AuditRun(plan, stop, callbacks, resume).Run();
  } catch (const std::exception& e) {
    // LibTorch throws c10::Error (e.g. out of memory): fail the audit, not
    // the server.
    return absl::InternalError(absl::StrCat("unexpected error: ", e.what()));
  }
}

}  // namespace memaudit::server
