#include "core/early/calibration.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace memaudit {
namespace {

// Scores oriented so that larger means "more memorized". Infinities keep
// their side (an infinite width is the least memorized, an infinite
// sharpness the most, as RobustOutlierScores has it); NaN, which has no
// order, counts as the least memorized.
std::vector<double> Oriented(const std::vector<double>& scores, bool higher_is_memorized) {
  std::vector<double> out;
  out.reserve(scores.size());
  for (double s : scores) {
    double v = higher_is_memorized ? s : -s;
    if (std::isnan(v)) v = -std::numeric_limits<double>::infinity();
    out.push_back(v);
  }
  return out;
}

}  // namespace

RocSummary ComputeRoc(const std::vector<double>& memorized,
                      const std::vector<double>& not_memorized, bool higher_is_memorized) {
  RocSummary roc;
  const std::vector<double> positive = Oriented(memorized, higher_is_memorized);
  const std::vector<double> negative = Oriented(not_memorized, higher_is_memorized);
  if (positive.empty() || negative.empty()) return roc;
  double wins = 0;
  for (double p : positive) {
    for (double n : negative) wins += p > n ? 1.0 : (p == n ? 0.5 : 0.0);
  }
  roc.auc = wins / (static_cast<double>(positive.size()) * negative.size());

  // Candidate cuts: every observed score (flag score >= cut), plus +∞.
  std::vector<double> cuts(positive);
  cuts.insert(cuts.end(), negative.begin(), negative.end());
  cuts.push_back(std::numeric_limits<double>::infinity());
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  double best_tpr = -1, best_j = -2;
  double best_cut = cuts.back(), youden_cut = cuts.back();
  for (double cut : cuts) {
    const double tpr = static_cast<double>(std::count_if(positive.begin(), positive.end(),
                                                         [cut](double v) { return v >= cut; })) /
                       positive.size();
    const double fpr = static_cast<double>(std::count_if(negative.begin(), negative.end(),
                                                         [cut](double v) { return v >= cut; })) /
                       negative.size();
    if (fpr <= 0.01 && tpr > best_tpr) {
      best_tpr = tpr;
      best_cut = cut;
    }
    if (tpr - fpr > best_j) {
      best_j = tpr - fpr;
      youden_cut = cut;
      roc.youden_tpr = tpr;
      roc.youden_fpr = fpr;
    }
  }
  roc.tpr_at_1pct_fpr = std::max(0.0, best_tpr);
  roc.threshold = higher_is_memorized ? best_cut : -best_cut;
  roc.youden_threshold = higher_is_memorized ? youden_cut : -youden_cut;
  return roc;
}

}  // namespace memaudit

namespace memaudit {
namespace {

double MedianOf(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return 0.5 * (values[(n - 1) / 2] + values[n / 2]);
}

}  // namespace

std::vector<double> RobustZScores(const std::vector<double>& values) {
  if (values.size() < kMinOutlierPopulation) return {};
  // The centre and spread of the finite values; a NaN scores 0 (it has no
  // order), ±∞ scores ±∞.
  std::vector<double> finite;
  for (double v : values) {
    if (std::isfinite(v)) finite.push_back(v);
  }
  std::vector<double> scores(values.size(), 0.0);
  if (finite.empty()) return scores;
  const double median = MedianOf(finite);
  std::vector<double> deviations;
  double mean_deviation = 0;
  for (double v : finite) {
    deviations.push_back(std::abs(v - median));
    mean_deviation += deviations.back() / static_cast<double>(finite.size());
  }
  double scale = 1.4826 * MedianOf(deviations);
  if (scale == 0) scale = 1.2533 * mean_deviation;
  if (scale == 0) return scores;
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isnan(values[i])) scores[i] = (values[i] - median) / scale;
  }
  return scores;
}

std::vector<double> RobustOutlierScores(const std::vector<double>& values) {
  if (values.size() < kMinOutlierPopulation) return {};
  double smallest_positive = std::numeric_limits<double>::infinity();
  for (double v : values) {
    if (v > 0 && std::isfinite(v)) smallest_positive = std::min(smallest_positive, v);
  }
  if (!std::isfinite(smallest_positive)) return std::vector<double>(values.size(), 0.0);
  std::vector<double> logs;
  logs.reserve(values.size());
  for (double v : values) {
    // +∞ stays +∞ (a diverging condition is the sharpest, not the flattest).
    logs.push_back(v > 0 && !std::isnan(v) ? std::log(v) : std::log(smallest_positive));
  }
  return RobustZScores(logs);
}

std::vector<double> AnisotropyScores(const std::vector<double>& norms,
                                     const std::vector<double>& alignments) {
  if (norms.size() != alignments.size()) return {};
  std::vector<double> finite_alignments;
  for (double a : alignments) finite_alignments.push_back(std::isfinite(a) ? a : 0.0);
  const std::vector<double> norm_z = RobustOutlierScores(norms);
  const std::vector<double> alignment_z = RobustZScores(finite_alignments);
  if (norm_z.empty() || alignment_z.empty()) return {};
  std::vector<double> scores(norms.size());
  for (size_t i = 0; i < scores.size(); ++i) scores[i] = norm_z[i] + alignment_z[i];
  return scores;
}

std::vector<double> AnisotropyOutlierScores(const std::vector<double>& norms,
                                            const std::vector<double>& alignments) {
  return RobustZScores(AnisotropyScores(norms, alignments));
}

std::vector<double> LabelFreeOutlierScores(EarlyMetric metric, const std::vector<double>& means,
                                           const std::vector<double>& alignments) {
  if (metric == EarlyMetric::kAnisotropy) return AnisotropyOutlierScores(means, alignments);
  return EarlyMetricInfoOf(metric).signed_values ? RobustZScores(means)
                                                 : RobustOutlierScores(means);
}

}  // namespace memaudit
