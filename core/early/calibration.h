// Calibrating memorization metrics on labelled conditions (known memorized
// vs known not): ROC AUC, TPR at 1% FPR, and thresholds (docs/DESIGN.md §2).
#ifndef MEMAUDIT_CORE_EARLY_CALIBRATION_H_
#define MEMAUDIT_CORE_EARLY_CALIBRATION_H_

#include <string>
#include <vector>

#include "core/early/early_metric.h"

namespace memaudit {

// Label-free outlier scores (no labels needed): the robust z of each
// log(value) against the median and MAD of all of them, the MAD scaled by
// 1.4826 so it estimates a standard deviation (when the MAD is 0, the mean
// absolute deviation scaled by 1.2533; when that is 0 too, every score is 0).
// For metrics where memorization shows as a large positive value (Jeon's
// sharpness): values ≤ 0 or NaN are clamped to the smallest positive one,
// +∞ scores +∞. Returns
// an empty vector for fewer than kMinOutlierPopulation values.
std::vector<double> RobustOutlierScores(const std::vector<double>& values);
inline constexpr size_t kMinOutlierPopulation = 3;

// The same robust z of the values themselves (no log), for values that may
// be negative (the anisotropy alignment, a cosine). The median and MAD are
// of the finite values; a NaN scores 0 and ±∞ scores ±∞.
std::vector<double> RobustZScores(const std::vector<double>& values);

// The anisotropy metric of Asthana & Belagiannis (ICLR 2026) without their
// per-model weights: per condition, the robust z of its log norm plus the
// robust z of its alignment, both among these conditions (the per-condition
// means of early_metrics.h's anisotropy_norm and anisotropy_alignment, in
// the same order). Each term is in units of its own spread among the
// conditions, so the sum weighs them equally on any model and needs no
// labels. Empty for fewer than kMinOutlierPopulation conditions or sizes
// that differ. A non-finite alignment counts as 0.
std::vector<double> AnisotropyScores(const std::vector<double>& norms,
                                     const std::vector<double>& alignments);
// Its label-free outlier score: the robust z of AnisotropyScores, to be
// compared with kOutlierZThreshold like the single metrics' scores.
std::vector<double> AnisotropyOutlierScores(const std::vector<double>& norms,
                                            const std::vector<double>& alignments);

// The label-free outlier score of each condition by `metric`, from the
// conditions' means of it (`means`): the robust z of their log, or of the
// means themselves for a signed metric (EarlyMetricInfo::signed_values);
// for the combined anisotropy score, `means` are the norms' and
// `alignments` the alignments' (AnisotropyOutlierScores). Empty for fewer
// than kMinOutlierPopulation conditions.
std::vector<double> LabelFreeOutlierScores(EarlyMetric metric, const std::vector<double>& means,
                                           const std::vector<double>& alignments = {});
// The usual cut for robust z (Iglewicz & Hoaglin's modified z-score).
inline constexpr double kOutlierZThreshold = 3.5;

struct RocSummary {
  // P(score of a memorized condition ranks above a non-memorized one), ties
  // counted half (Mann–Whitney), in the metric's memorized direction.
  double auc = 0.0;
  // The highest TPR among thresholds whose FPR is at most 1%: conditions
  // flagged are those at or beyond `threshold` in the memorized direction.
  // With fewer than 100 negatives that means no false positive at all.
  double tpr_at_1pct_fpr = 0.0;
  double threshold = 0.0;
  // The threshold maximizing Youden's J = TPR − FPR (a more lenient cut,
  // used for the PARTIAL band).
  double youden_threshold = 0.0;
  double youden_tpr = 0.0, youden_fpr = 0.0;
};

// `memorized` and `not_memorized` are per-condition scores; when
// `higher_is_memorized` is false smaller scores mean memorization.
// Infinite scores keep their side (an infinite width is the least
// memorized, an infinite sharpness the most); NaN sorts as the least
// memorized. A sample is flagged at or beyond `threshold`; +∞ (−∞ when
// smaller is memorized) when no finite cut keeps FPR ≤ 1%.
RocSummary ComputeRoc(const std::vector<double>& memorized,
                      const std::vector<double>& not_memorized, bool higher_is_memorized);

// The rule above, in words, for reports.
inline constexpr const char* kRocPointRule =
    "threshold = the cut with the highest TPR among those with FPR <= 1% (flagged: score at or "
    "beyond it in the memorized direction; with < 100 negatives, FPR 0); partial band = the "
    "cut maximizing Youden's J";

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_EARLY_CALIBRATION_H_
