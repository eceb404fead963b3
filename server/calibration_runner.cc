#include "calibration_runner.h"

#include <algorithm>
#include <chrono>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "audit_runner.h"
#include "calibration.h"
#include "early_metrics.h"
#include "request_options.h"
#include "sample_curvature.h"

namespace memaudit::server {
namespace {

constexpr int64_t kDefaultCalibrationSamples = 4;
constexpr int64_t kMaxCalibrationConditions = 10000;

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values.empty() ? 0.0 : values[values.size() / 2];
}

struct MetricSpec {
  const char* name;
  bool higher_is_memorized;
};

// The per-condition scores, by metric name.
using Scores = std::map<std::string, double>;

absl::StatusOr<Scores> ScoreCondition(const v1::Condition& condition, const std::string& field,
                                      const v1::CalibrationRequest& request,
                                      const LoadedModel& model, const StopCheck& stop) {
  const Denoiser& denoiser = *model.denoiser;
  const int64_t n = request.samples_per_condition() > 0 ? request.samples_per_condition()
                                                        : kDefaultCalibrationSamples;
  std::vector<uint64_t> seeds(n);
  for (int64_t i = 0; i < n; ++i) seeds[i] = request.seed() + i;
  auto batch = ToConditionBatch(condition, denoiser, n, field);
  if (!batch.ok()) return batch.status();
  auto sampler = ToSamplerOptions(request.sampling(), denoiser.schedule(), "sampling");
  if (!sampler.ok()) return sampler.status();
  auto curvature = ToCurvatureSettings(request.curvature(), "curvature");
  if (!curvature.ok()) return curvature.status();

  SampleCurvatureOptions options;
  options.sampler = *sampler;
  options.score_kind = curvature->score_kind;
  options.spectrum = curvature->spectrum;
  options.jacobian = curvature->jacobian;
  options.method = curvature->method;
  options.arnoldi = curvature->arnoldi;
  options.max_dense_dimension = model.max_dense_dimension;
  auto measured = MeasureSamples(denoiser, seeds, *batch, options, nullptr, stop);
  if (!measured.ok()) return measured.status();
  std::vector<double> widths, positive, flat, max_kappa;
  for (const SampleCurvature& sample : *measured) {
    const SpectrumSummary& s = sample.spectra.front().summary;
    widths.push_back(s.width);
    positive.push_back(static_cast<double>(s.positive_count));
    flat.push_back(static_cast<double>(s.flat_count));
    max_kappa.push_back(s.max_kappa);
  }
  Scores scores = {{"width", Median(widths)},
                   {"positive_eigenvalues", Mean(positive)},
                   {"flat_directions", Mean(flat)},
                   {"max_kappa", Mean(max_kappa)}};

  EarlyMetricOptions early;
  early.sampler = *sampler;
  if (request.early_steps() > 0) early.steps = request.early_steps();
  auto metrics = ComputeEarlyMetrics(denoiser, seeds, *batch, early, stop);
  if (!metrics.ok()) return metrics.status();
  if (metrics->conditional) {
    scores["wen_noise_difference"] = Mean(metrics->wen);
    scores["jeon_sharpness"] = Mean(metrics->jeon);
  } else {
    scores["score_norm_squared"] = Mean(metrics->score_norm_squared);
    scores["hessian_score_squared"] = Mean(metrics->hessian_score_squared);
    std::vector<double> negative_trace;
    for (double v : metrics->hutchinson_trace) negative_trace.push_back(-v);
    scores["negative_trace"] = Mean(negative_trace);
  }
  return scores;
}

}  // namespace

absl::StatusOr<v1::CalibrationResponse> RunCalibration(const v1::CalibrationRequest& request,
                                                       const LoadedModel& model,
                                                       const StopCheck& stop) {
  const auto start = std::chrono::steady_clock::now();
  if (request.memorized_size() < 2 || request.not_memorized_size() < 2) {
    return absl::InvalidArgumentError(
        "memorized, not_memorized: give at least 2 labelled conditions in each");
  }
  if (request.memorized_size() + request.not_memorized_size() > kMaxCalibrationConditions) {
    return absl::InvalidArgumentError("too many conditions (at most 10000)");
  }
  if (request.samples_per_condition() < 0 || request.samples_per_condition() > 1024) {
    return absl::InvalidArgumentError("samples_per_condition: must be in [1, 1024]");
  }
  {
    v1::AuditRequest as_audit;
    as_audit.set_model(request.model());
    *as_audit.mutable_sampling() = request.sampling();
    *as_audit.mutable_curvature() = request.curvature();
    if (absl::Status s = ValidateAuditRequest(as_audit, model); !s.ok()) return s;
  }
  std::vector<Scores> memorized, generalizing;
  for (int i = 0; i < request.memorized_size(); ++i) {
    auto scores = ScoreCondition(request.memorized(i), absl::StrCat("memorized[", i, "]"), request,
                                 model, stop);
    if (!scores.ok()) return scores.status();
    memorized.push_back(*std::move(scores));
  }
  for (int i = 0; i < request.not_memorized_size(); ++i) {
    auto scores = ScoreCondition(request.not_memorized(i), absl::StrCat("not_memorized[", i, "]"),
                                 request, model, stop);
    if (!scores.ok()) return scores.status();
    generalizing.push_back(*std::move(scores));
  }
  auto is_common = [&](const char* name) {
    for (const auto* group : {&memorized, &generalizing}) {
      for (const Scores& s : *group) {
        if (!s.count(name)) return false;
      }
    }
    return true;
  };
  static const std::vector<MetricSpec> kSpecs = {{"width", false},
                                                 {"positive_eigenvalues", false},
                                                 {"flat_directions", false},
                                                 {"max_kappa", false},
                                                 {"wen_noise_difference", true},
                                                 {"jeon_sharpness", true},
                                                 {"score_norm_squared", true},
                                                 {"hessian_score_squared", true},
                                                 {"negative_trace", true}};
  v1::CalibrationResponse response;
  response.set_roc_point_rule(kRocPointRule);
  response.set_data_scale(model.policy.data_scale);
  const v1::CalibratedMetric* best_early = nullptr;
  const v1::CalibratedMetric* width = nullptr;
  for (const MetricSpec& spec : kSpecs) {
    // Early metrics differ between real and null conditions: only metrics
    // every condition has are calibrated.
    if (!is_common(spec.name)) continue;
    v1::CalibratedMetric* metric = response.add_metrics();
    metric->set_name(spec.name);
    metric->set_higher_is_memorized(spec.higher_is_memorized);
    std::vector<double> positives, negatives;
    for (const Scores& s : memorized) positives.push_back(s.at(spec.name));
    for (const Scores& s : generalizing) negatives.push_back(s.at(spec.name));
    for (double v : positives) metric->add_memorized_scores(v);
    for (double v : negatives) metric->add_not_memorized_scores(v);
    const RocSummary roc = ComputeRoc(positives, negatives, spec.higher_is_memorized);
    metric->set_auc(roc.auc);
    metric->set_tpr_at_1pct_fpr(roc.tpr_at_1pct_fpr);
    metric->set_threshold(roc.threshold);
    metric->set_youden_threshold(roc.youden_threshold);
  }
  for (const v1::CalibratedMetric& metric : response.metrics()) {
    if (metric.name() == "width") width = &metric;
    const bool early = metric.higher_is_memorized();
    if (early && (best_early == nullptr || metric.auc() > best_early->auc())) best_early = &metric;
  }
  std::string policy = "verdict_policy {\n";
  const double scale = model.policy.data_scale;
  if (width != nullptr && std::isfinite(width->threshold())) {
    const double partial = std::isfinite(width->youden_threshold())
                               ? std::max(width->youden_threshold(), width->threshold())
                               : width->threshold();
    absl::StrAppendFormat(&policy,
                          "  # width: AUC %.3f, TPR %.3f at FPR <= 1%%\n"
                          "  memorized_width: %.6g\n  partial_width: %.6g\n  data_scale: %.6g\n",
                          width->auc(), width->tpr_at_1pct_fpr(), width->threshold() / scale,
                          partial / scale, scale);
  }
  if (best_early != nullptr) {
    absl::StrAppendFormat(&policy,
                          "  # %s: AUC %.3f, TPR %.3f at FPR <= 1%%\n"
                          "  early_metric: \"%s\"\n  early_threshold: %.6g\n",
                          best_early->name(), best_early->auc(), best_early->tpr_at_1pct_fpr(),
                          best_early->name(), best_early->threshold());
  }
  policy += "}\n";
  response.set_verdict_policy(policy);
  response.set_seconds(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return response;
}

}  // namespace memaudit::server
