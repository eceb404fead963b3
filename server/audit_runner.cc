#include "audit_runner.h"

#include <ATen/ATen.h>

#include <chrono>
#include <map>

#include "absl/strings/str_cat.h"
#include "calibration.h"
#include "early_metrics.h"
#include "request_options.h"
#include "sample_curvature.h"

namespace memaudit::server {
namespace {

// Samples measured per MeasureSamples call: a progress event and a stop
// check at least this often, with network calls still batched.
constexpr int64_t kSamplesPerBatch = 8;

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::vector<v1::Condition> EffectiveConditions(const v1::AuditRequest& request) {
  if (request.conditions_size() > 0) {
    return {request.conditions().begin(), request.conditions().end()};
  }
  return {v1::Condition()};
}

int64_t SamplesPerCondition(const v1::AuditRequest& request) {
  return request.samples_per_condition() > 0 ? request.samples_per_condition()
                                             : kDefaultSamplesPerCondition;
}

// Flag early: only the early metrics, a verdict from the calibrated
// threshold on the configured metric's mean over the generations.
absl::Status RunEarlyCondition(const v1::AuditRequest& request, const LoadedModel& model,
                               const v1::Condition& condition, int64_t count, const StopCheck& stop,
                               v1::ConditionReport* report, bool judge = true) {
  const Denoiser& denoiser = *model.denoiser;
  std::vector<uint64_t> seeds(count);
  for (int64_t i = 0; i < count; ++i) seeds[i] = request.seed() + i;
  auto batch = ToConditionBatch(condition, denoiser, count, "conditions");
  if (!batch.ok()) return batch.status();
  EarlyMetricOptions options;
  options.sampler = *ToSamplerOptions(request.sampling(), denoiser.schedule(), "sampling");
  if (request.early_steps() > 0) options.steps = request.early_steps();
  auto metrics = ComputeEarlyMetrics(denoiser, seeds, *batch, options, stop);
  if (!metrics.ok()) return metrics.status();
  ToEarlyMetricsProto(*metrics, report->mutable_early());
  std::vector<double> negative_trace;
  for (double v : metrics->hutchinson_trace) negative_trace.push_back(-v);
  const std::map<std::string, const std::vector<double>*> by_name = {
      {"wen_noise_difference", &metrics->wen},
      {"jeon_sharpness", &metrics->jeon},
      {"score_norm_squared", &metrics->score_norm_squared},
      {"hessian_score_squared", &metrics->hessian_score_squared},
      {"negative_trace", &negative_trace}};
  if (!judge) return absl::OkStatus();
  auto it = by_name.find(model.policy.early_metric);
  if (it == by_name.end() || it->second->empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("verdict_policy.early_metric \"", model.policy.early_metric,
                     "\" is not available for condition ", ConditionLabel(condition)));
  }
  const bool memorized = Mean(*it->second) >= model.policy.early_threshold;
  report->set_verdict(memorized ? v1::MEMORIZED : v1::NOT_MEMORIZED);
  return absl::OkStatus();
}

// Sets each condition's early_outlier_z from its mean Jeon sharpness when
// at least kMinOutlierPopulation conditions carry it.
void ScoreEarlyOutliers(v1::AuditReport* report) {
  std::vector<double> means;
  std::vector<v1::ConditionReport*> scored;
  for (v1::ConditionReport& condition : *report->mutable_conditions()) {
    if (!condition.has_early() || !condition.early().conditional()) continue;
    means.push_back(condition.early().jeon_sharpness().mean());
    scored.push_back(&condition);
  }
  const std::vector<double> z = RobustOutlierScores(means);
  for (size_t i = 0; i < z.size(); ++i) scored[i]->set_early_outlier_z(z[i]);
}

}  // namespace

v1::Verdict ToProtoVerdict(Verdict verdict) {
  switch (verdict) {
    case Verdict::kMemorized:
      return v1::MEMORIZED;
    case Verdict::kPartial:
      return v1::PARTIAL;
    default:
      return v1::NOT_MEMORIZED;
  }
}

absl::Status ValidateAuditRequest(const v1::AuditRequest& request, const LoadedModel& model) {
  const Denoiser& denoiser = *model.denoiser;
  if (request.samples_per_condition() < 0 ||
      request.samples_per_condition() > kMaxSamplesPerCondition) {
    return absl::InvalidArgumentError(
        absl::StrCat("samples_per_condition: must be in [1, ", kMaxSamplesPerCondition, "]"));
  }
  if (request.conditions_size() > kMaxConditions) {
    return absl::InvalidArgumentError(
        absl::StrCat("conditions: at most ", kMaxConditions, " per audit"));
  }
  auto sampler = ToSamplerOptions(request.sampling(), denoiser.schedule(), "sampling");
  if (!sampler.ok()) return sampler.status();
  if (request.early_only() && model.policy.early_metric.empty()) {
    // Label-free flags need a population of conditions to be outliers of.
    if (!model.checkpoint->conditional() ||
        EffectiveConditions(request).size() < kMinOutlierPopulation) {
      return absl::InvalidArgumentError(absl::StrCat(
          "early_only: the model's verdict_policy has no early_metric (run `memaudit calibrate` "
          "for calibrated flags), and label-free flags need at least ",
          kMinOutlierPopulation, " conditions of a conditional model to compare"));
    }
  }
  if (request.early_steps() < 0 || request.early_steps() > sampler->num_steps) {
    return absl::InvalidArgumentError("early_steps: must be in [1, sampling.num_steps]");
  }
  auto curvature = ToCurvatureSettings(request.curvature(), "curvature");
  if (!curvature.ok()) return curvature.status();
  if (curvature->arnoldi.target != EigenTarget::kLargestReal) {
    return absl::InvalidArgumentError(
        "curvature.target: audits need the LARGEST_REAL end (flat count, n+, width)");
  }
  if (curvature->method == SpectrumMethod::kDense &&
      model.checkpoint->sample_numel() > model.max_dense_dimension) {
    return absl::InvalidArgumentError(absl::StrCat(
        "curvature.method: dimension ", model.checkpoint->sample_numel(),
        " exceeds the dense-spectrum limit ", model.max_dense_dimension, "; use ARNOLDI"));
  }
  if (curvature->spectrum.symmetrize &&
      ResolveSpectrumMethod(curvature->method, model.checkpoint->sample_numel(),
                            model.max_dense_dimension) == SpectrumMethod::kArnoldi) {
    return absl::InvalidArgumentError("curvature.symmetrize: only the dense method offers it");
  }
  for (int i = 0; i < request.timesteps_size(); ++i) {
    if (absl::Status s = CheckTimestep(request.timesteps(i), denoiser.schedule(),
                                       absl::StrCat("timesteps[", i, "]"));
        !s.ok()) {
      return s;
    }
  }
  const std::vector<v1::Condition> conditions = EffectiveConditions(request);
  for (size_t i = 0; i < conditions.size(); ++i) {
    auto batch = ToConditionBatch(conditions[i], denoiser, 1, absl::StrCat("conditions[", i, "]"));
    if (!batch.ok()) return batch.status();
    // The score kind must be computable for this condition.
    auto field = denoiser.ScoreField(denoiser.schedule().num_train_timesteps() - 1,
                                     curvature->score_kind, *batch, sampler->guidance);
    if (!field.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("curvature.score_kind: ", field.status().message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::AuditReport> RunAudit(const v1::AuditRequest& request, const LoadedModel& model,
                                         const StopCheck& stop, const AuditCallbacks& callbacks) {
  if (absl::Status s = ValidateAuditRequest(request, model); !s.ok()) return s;
  const auto start = std::chrono::steady_clock::now();
  const Denoiser& denoiser = *model.denoiser;
  SampleCurvatureOptions options;
  options.sampler = *ToSamplerOptions(request.sampling(), denoiser.schedule(), "sampling");
  const CurvatureSettings curvature = *ToCurvatureSettings(request.curvature(), "curvature");
  options.score_kind = curvature.score_kind;
  options.spectrum = curvature.spectrum;
  options.jacobian = curvature.jacobian;
  options.method = curvature.method;
  options.arnoldi = curvature.arnoldi;
  options.max_dense_dimension = model.max_dense_dimension;
  options.timesteps.assign(request.timesteps().begin(), request.timesteps().end());

  const std::vector<v1::Condition> conditions = EffectiveConditions(request);
  const int64_t per_condition = SamplesPerCondition(request);
  const std::string method_name =
      ResolveSpectrumMethod(options.method, model.checkpoint->sample_numel(),
                            options.max_dense_dimension) == SpectrumMethod::kArnoldi
          ? "arnoldi"
          : "dense";
  const int64_t total = per_condition * static_cast<int64_t>(conditions.size());
  const ReferenceSet* reference = model.reference ? &*model.reference : nullptr;

  v1::AuditReport report;
  report.set_model(model.checkpoint->config().name());
  report.set_device(model.checkpoint->device().str());
  report.set_model_checksum(model.checksum);
  v1::PolicyUsed* policy = report.mutable_policy();
  policy->set_max_positive_eigenvalues(model.policy.max_positive_eigenvalues);
  policy->set_memorized_width(model.policy.memorized_width);
  policy->set_partial_width(model.policy.partial_width);
  policy->set_data_scale(model.policy.data_scale);
  policy->set_condition_memorized_fraction(model.policy.condition_memorized_fraction);
  policy->set_rule(VerdictRuleName(model.policy.rule));
  policy->set_spacing(model.policy.spacing);
  policy->set_memorized_radius(model.policy.memorized_radius);
  policy->set_partial_radius(model.policy.partial_radius);
  policy->set_memorized_noise_radius(model.policy.memorized_noise_radius);
  policy->set_partial_noise_radius(model.policy.partial_noise_radius);
  policy->set_model_memorized_fraction(model.policy.model_memorized_fraction);

  double sampling_seconds = 0, curvature_seconds = 0;
  int64_t done = 0;
  Verdict overall = Verdict::kNotMemorized;
  int64_t memorized_samples = 0, audited_samples = 0;
  for (size_t c = 0; c < conditions.size(); ++c) {
    v1::ConditionReport* condition_report = report.add_conditions();
    *condition_report->mutable_condition() = conditions[c];
    condition_report->set_label(ConditionLabel(conditions[c]));
    if (request.early_only()) {
      if (absl::Status s = RunEarlyCondition(request, model, conditions[c], per_condition, stop,
                                             condition_report,
                                             /*judge=*/!model.policy.early_metric.empty());
          !s.ok()) {
        return s;
      }
      done += per_condition;
      if (callbacks.progress) {
        v1::AuditProgress progress;
        progress.set_samples_done(done);
        progress.set_samples_total(total);
        progress.set_phase("early metrics");
        progress.set_condition(condition_report->label());
        callbacks.progress(progress);
      }
      overall =
          std::max(overall, condition_report->verdict() == v1::MEMORIZED ? Verdict::kMemorized
                                                                         : Verdict::kNotMemorized);
      continue;
    }
    for (int64_t first = 0; first < per_condition; first += kSamplesPerBatch) {
      if (absl::Status s = CheckStop(stop); !s.ok()) return s;
      const int64_t count = std::min(kSamplesPerBatch, per_condition - first);
      std::vector<uint64_t> seeds(count);
      for (int64_t i = 0; i < count; ++i) seeds[i] = request.seed() + first + i;
      auto condition_batch = ToConditionBatch(conditions[c], denoiser, count, "conditions");
      if (!condition_batch.ok()) return condition_batch.status();
      auto phase_start = std::chrono::steady_clock::now();
      std::string phase;
      int64_t curvature_done = 0;
      auto measured = MeasureSamples(
          denoiser, seeds, *condition_batch, options, reference, stop,
          [&](const SampleCurvatureProgress& p) {
            const double elapsed = SecondsSince(phase_start);
            phase_start = std::chrono::steady_clock::now();
            if (std::string(p.phase) == "sampling") {
              sampling_seconds += elapsed;
            } else {
              curvature_seconds += elapsed;
              const int64_t spectra = p.done - curvature_done;
              curvature_done = p.done;
              for (int64_t k = 0; callbacks.spectrum_seconds && k < spectra; ++k) {
                callbacks.spectrum_seconds(method_name, elapsed / static_cast<double>(spectra));
              }
            }
            if (phase != p.phase) {
              phase = p.phase;
              if (callbacks.progress) {
                v1::AuditProgress progress;
                progress.set_samples_done(done);
                progress.set_samples_total(total);
                progress.set_phase(phase);
                progress.set_condition(condition_report->label());
                callbacks.progress(progress);
              }
            }
          });
      if (!measured.ok()) return measured.status();
      for (const SampleCurvature& sample : *measured) {
        v1::SampleReport* sample_report = condition_report->add_samples();
        sample_report->set_seed(sample.seed);
        const Spectrum& primary = sample.spectra.front();
        sample_report->set_timestep(primary.t);
        sample_report->set_sigma(primary.sigma);
        ToSummaryProto(primary.summary, sample_report->mutable_summary());
        for (size_t k = 1; k < sample.spectra.size(); ++k) {
          v1::SpectrumProfilePoint* point = sample_report->add_profile();
          point->set_timestep(sample.spectra[k].t);
          point->set_sigma(sample.spectra[k].sigma);
          ToSummaryProto(sample.spectra[k].summary, point->mutable_summary());
        }
        if (sample.truth) {
          v1::NearestNeighbor* nearest = sample_report->mutable_nearest();
          nearest->set_index(sample.truth->index);
          nearest->set_d1(sample.truth->d1);
          nearest->set_d2(sample.truth->d2);
          nearest->set_ratio(sample.truth->ratio);
          nearest->set_multiplicity(sample.truth->multiplicity);
          nearest->set_is_copy(sample.truth->is_copy());
          nearest->set_gap(sample.truth->gap);
        }
        const Verdict verdict =
            JudgeSample(primary.summary, model.policy, sample.truth ? &*sample.truth : nullptr);
        sample_report->set_verdict(ToProtoVerdict(verdict));
        if (verdict == Verdict::kMemorized) {
          condition_report->set_memorized(condition_report->memorized() + 1);
        } else if (verdict == Verdict::kPartial) {
          condition_report->set_partial(condition_report->partial() + 1);
        } else {
          condition_report->set_not_memorized(condition_report->not_memorized() + 1);
        }
        ++done;
        if (callbacks.sample) callbacks.sample(*sample_report);
      }
      if (callbacks.progress) {
        v1::AuditProgress progress;
        progress.set_samples_done(done);
        progress.set_samples_total(total);
        progress.set_phase("measured");
        progress.set_condition(condition_report->label());
        callbacks.progress(progress);
      }
    }
    if (request.early_steps() > 0) {
      // Early metrics alongside the full audit (no early verdict).
      if (absl::Status s = RunEarlyCondition(request, model, conditions[c], per_condition, stop,
                                             condition_report, /*judge=*/false);
          !s.ok()) {
        return s;
      }
    }
    const Verdict condition_verdict =
        JudgeCondition(condition_report->memorized(), condition_report->partial(),
                       condition_report->samples_size(), model.policy);
    condition_report->set_verdict(ToProtoVerdict(condition_verdict));
    overall = std::max(overall, condition_verdict);
    memorized_samples += condition_report->memorized();
    audited_samples += condition_report->samples_size();
  }
  ScoreEarlyOutliers(&report);
  if (request.early_only()) {
    if (model.policy.early_metric.empty()) {
      report.mutable_policy()->set_early_rule(
          absl::StrCat("label-free: jeon_sharpness outlier z >= ", kOutlierZThreshold));
      overall = Verdict::kNotMemorized;
      for (v1::ConditionReport& condition : *report.mutable_conditions()) {
        const bool outlier =
            condition.has_early_outlier_z() && condition.early_outlier_z() >= kOutlierZThreshold;
        condition.set_verdict(outlier ? v1::MEMORIZED : v1::NOT_MEMORIZED);
        if (outlier) overall = Verdict::kMemorized;
      }
    } else {
      report.mutable_policy()->set_early_rule(absl::StrCat(
          "calibrated: ", model.policy.early_metric, " >= ", model.policy.early_threshold));
    }
  }
  report.set_memorized_samples(memorized_samples);
  report.set_total_samples(audited_samples);
  report.set_memorized_fraction(
      audited_samples > 0 ? static_cast<double>(memorized_samples) / audited_samples : 0.0);
  if (!request.early_only()) {
    overall = JudgeModel(overall, memorized_samples, audited_samples, model.policy);
  }
  report.set_verdict(ToProtoVerdict(overall));
  v1::AuditTiming* timing = report.mutable_timing();
  timing->set_total_seconds(SecondsSince(start));
  timing->set_sampling_seconds(sampling_seconds);
  timing->set_curvature_seconds(curvature_seconds);
  return report;
}

}  // namespace memaudit::server
