#include "server/calibration_runner.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <map>
#include <string>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/audit/sample_curvature.h"
#include "core/base/status_macros.h"
#include "core/early/calibration.h"
#include "core/early/early_metrics.h"

namespace memaudit::server {
namespace {

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values.empty() ? 0.0 : values[values.size() / 2];
}

// Curvature statistics calibrated besides the early metrics; for each of
// them a smaller value means memorized.
constexpr const char* kWidth = "width";
constexpr const char* kCurvatureMetrics[] = {kWidth, "positive_eigenvalues", "flat_directions",
                                             "max_kappa"};

// The per-condition scores, by metric name.
using Scores = std::map<std::string, double>;

absl::StatusOr<Scores> ScoreCondition(const ConditionPlan& planned, const CalibrationPlan& plan,
                                      const StopCheck& stop) {
  const Denoiser& denoiser = *plan.model->denoiser;
  ASSIGN_OR_RETURN(const ConditionPlan condition, EncodePrompt(planned, denoiser));
  const int64_t n = plan.samples_per_condition;
  const std::vector<uint64_t> seeds = ConsecutiveSeeds(plan.seed, n);
  const at::Tensor batch = RepeatCondition(condition, n);
  Scores scores;
  if (!plan.early_only) {
    ASSIGN_OR_RETURN(const std::vector<SampleCurvature> measured,
                     MeasureSamples(denoiser, seeds, batch, plan.curvature, nullptr, stop));
    std::vector<double> widths, positive, flat, max_kappa;
    for (const SampleCurvature& sample : measured) {
      const SpectrumSummary& s = sample.spectra.front().summary;
      widths.push_back(s.width);
      positive.push_back(static_cast<double>(s.positive_count));
      flat.push_back(static_cast<double>(s.flat_count));
      max_kappa.push_back(s.max_kappa);
    }
    scores = {{kCurvatureMetrics[0], Median(widths)},
              {kCurvatureMetrics[1], Mean(positive)},
              {kCurvatureMetrics[2], Mean(flat)},
              {kCurvatureMetrics[3], Mean(max_kappa)}};
  }
  ASSIGN_OR_RETURN(const EarlyMetricSamples early,
                   ComputeEarlyMetrics(denoiser, seeds, batch, plan.early, stop));
  for (const EarlyMetricInfo& info : AllEarlyMetrics()) {
    const std::vector<double> values = EarlyMetricValues(early, info.metric);
    if (!values.empty()) scores[info.name] = Mean(values);
  }
  return scores;
}

absl::StatusOr<std::vector<Scores>> ScoreConditions(const std::vector<ConditionPlan>& conditions,
                                                    const CalibrationPlan& plan,
                                                    const StopCheck& stop) {
  std::vector<Scores> scores;
  for (const ConditionPlan& condition : conditions) {
    ASSIGN_OR_RETURN(Scores s, ScoreCondition(condition, plan, stop));
    scores.push_back(std::move(s));
  }
  return scores;
}

// The combined anisotropy score of every condition, among all of them as
// one population (the labels are not used: it is the label-free score).
void AddAnisotropyScores(std::vector<Scores>* memorized, std::vector<Scores>* not_memorized) {
  const char* norm_name = EarlyMetricName(EarlyMetric::kAnisotropyNorm);
  const char* alignment_name = EarlyMetricName(EarlyMetric::kAnisotropyAlignment);
  std::vector<double> norms, alignments;
  for (std::vector<Scores>* group : {memorized, not_memorized}) {
    for (const Scores& s : *group) {
      auto norm = s.find(norm_name), alignment = s.find(alignment_name);
      if (norm == s.end() || alignment == s.end()) return;
      norms.push_back(norm->second);
      alignments.push_back(alignment->second);
    }
  }
  const std::vector<double> combined = AnisotropyScores(norms, alignments);
  if (combined.empty()) return;
  size_t i = 0;
  for (std::vector<Scores>* group : {memorized, not_memorized}) {
    for (Scores& s : *group) s[EarlyMetricName(EarlyMetric::kAnisotropy)] = combined[i++];
  }
}

// Adds the metric's scores and ROC summary to `response` when every
// condition has it (early metrics differ between real and null conditions).
void AddMetric(const char* name, bool higher_is_memorized, const std::vector<Scores>& memorized,
               const std::vector<Scores>& not_memorized, v1::CalibrationResponse* response) {
  std::vector<double> positives, negatives;
  for (const auto& [group, values] :
       {std::pair{&memorized, &positives}, std::pair{&not_memorized, &negatives}}) {
    for (const Scores& s : *group) {
      auto it = s.find(name);
      if (it == s.end()) return;
      values->push_back(it->second);
    }
  }
  v1::CalibratedMetric* metric = response->add_metrics();
  metric->set_name(name);
  metric->set_higher_is_memorized(higher_is_memorized);
  for (double v : positives) metric->add_memorized_scores(v);
  for (double v : negatives) metric->add_not_memorized_scores(v);
  const RocSummary roc = ComputeRoc(positives, negatives, higher_is_memorized);
  metric->set_auc(roc.auc);
  metric->set_tpr_at_1pct_fpr(roc.tpr_at_1pct_fpr);
  metric->set_threshold(roc.threshold);
  metric->set_youden_threshold(roc.youden_threshold);
}

// The shortest decimal that reads back as exactly `value`: a threshold is
// an observed score, flagged itself, and rounding it (%.6g) could move it
// past that score.
std::string RoundTrip(double value) {
  char buffer[32];
  const auto [end, error] = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return error == std::errc() ? std::string(buffer, end) : absl::StrFormat("%.17g", value);
}

absl::StatusOr<v1::CalibrationResponse> RunCalibrationOrThrow(const CalibrationPlan& plan,
                                                              const StopCheck& stop) {
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(std::vector<Scores> memorized, ScoreConditions(plan.memorized, plan, stop));
  ASSIGN_OR_RETURN(std::vector<Scores> not_memorized,
                   ScoreConditions(plan.not_memorized, plan, stop));
  v1::CalibrationResponse response;
  response.set_roc_point_rule(kRocPointRule);
  const double scale = plan.model->policy.data_scale;
  response.set_data_scale(scale);
  for (const char* name : kCurvatureMetrics) {
    AddMetric(name, /*higher_is_memorized=*/false, memorized, not_memorized, &response);
  }
  AddAnisotropyScores(&memorized, &not_memorized);
  for (const EarlyMetricInfo& info : AllEarlyMetrics()) {
    AddMetric(info.name, /*higher_is_memorized=*/true, memorized, not_memorized, &response);
  }
  response.set_verdict_policy(SuggestedPolicy(response, scale));
  response.set_seconds(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return response;
}

}  // namespace

std::string SuggestedPolicy(const v1::CalibrationResponse& response, double scale) {
  const v1::CalibratedMetric* width = nullptr;
  const v1::CalibratedMetric* best_early = nullptr;
  for (const v1::CalibratedMetric& metric : response.metrics()) {
    if (metric.name() == kWidth) width = &metric;
    // Early metrics are the ones where higher is memorized; a score among
    // conditions has no threshold that carries over to another audit.
    // A metric whose every cut lets through more than 1% false positives
    // has an infinite threshold: nothing to suggest.
    const bool early = metric.higher_is_memorized() &&
                       metric.name() != EarlyMetricName(EarlyMetric::kAnisotropy) &&
                       std::isfinite(metric.threshold());
    if (early && (best_early == nullptr || metric.auc() > best_early->auc())) best_early = &metric;
  }
  std::string policy = "verdict_policy {\n";
  if (width != nullptr && std::isfinite(width->threshold())) {
    const double partial = std::isfinite(width->youden_threshold())
                               ? std::max(width->youden_threshold(), width->threshold())
                               : width->threshold();
    absl::StrAppendFormat(&policy,
                          "  # width: AUC %.3f, TPR %.3f at FPR <= 1%%\n"
                          "  memorized_width: %s\n  partial_width: %s\n  data_scale: %s\n",
                          width->auc(), width->tpr_at_1pct_fpr(),
                          RoundTrip(width->threshold() / scale), RoundTrip(partial / scale),
                          RoundTrip(scale));
  }
  if (best_early != nullptr) {
    absl::StrAppendFormat(&policy,
                          "  # %s: AUC %.3f, TPR %.3f at FPR <= 1%%\n"
                          "  early_metric: \"%s\"\n  early_threshold: %s\n",
                          best_early->name(), best_early->auc(), best_early->tpr_at_1pct_fpr(),
                          best_early->name(), RoundTrip(best_early->threshold()));
  } else {
    policy += "  # no early metric keeps false positives at or below 1%\n";
  }
  policy += "}\n";
  return policy;
}

absl::StatusOr<v1::CalibrationResponse> RunCalibration(const CalibrationPlan& plan,
                                                       const StopCheck& stop) {
  try {
    return RunCalibrationOrThrow(plan, stop);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("unexpected error: ", e.what()));
  }
}

}  // namespace memaudit::server
