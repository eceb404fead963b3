// The vocabulary of early (first-step) memorization metrics: one table with
// each metric's public name, which kind of condition it applies to, what it
// costs, and its direction. The values themselves are computed in
// early_metrics.h; the combined anisotropy score in calibration.h.
#ifndef MEMAUDIT_CORE_EARLY_EARLY_METRIC_H_
#define MEMAUDIT_CORE_EARLY_EARLY_METRIC_H_

#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace memaudit {

enum class EarlyMetric {
  kWenNoiseDifference,   // ‖ε̂_c − ε̂_∅‖ (conditional)
  kJeonSharpness,        // ‖H^Δ s^Δ‖ (conditional)
  kScoreNormSquared,     // ‖s‖² (unconditional)
  kHessianScoreSquared,  // ‖H s‖² (unconditional)
  kNegativeTrace,        // −tr H, Hutchinson estimate (unconditional)
  // Asthana & Belagiannis (ICLR 2026), from x_T alone (conditional):
  kAnisotropyNorm,       // ‖ε̂_c − ε̂_∅‖ at (x_T, the first timestep)
  kAnisotropyAlignment,  // cos(ε̂_∅, ε̂_c − ε̂_∅) at (x_T, a low-noise timestep)
  kAnisotropy,           // the two combined among conditions (robust z sum)
};

struct EarlyMetricInfo {
  EarlyMetric metric;
  // The name in verdict policies, reports and calibration results.
  const char* name;
  // Computed for a real condition against the null one (else for none).
  bool conditional;
  // Needs a derivative of the network (a JVP or backward pass); the others
  // need forward passes only, the cheap screen's metrics.
  bool derivative;
  // Its values may be negative (a cosine): outlier scores take the values
  // as they are, not their log, and a calibrated threshold may be negative.
  bool signed_values;
  // A score of a condition relative to the other conditions measured with
  // it (calibration.h, AnisotropyScores), not a value of one condition: it
  // has no per-sample values, serves label-free flags and calibration's
  // ranking, and cannot carry a transferable threshold (verdict_policy).
  bool among_conditions;
};

// Every metric, in a fixed order. Each is oriented so that a higher value
// means sharper, i.e. more likely memorized.
absl::Span<const EarlyMetricInfo> AllEarlyMetrics();
const EarlyMetricInfo& EarlyMetricInfoOf(EarlyMetric metric);
inline const char* EarlyMetricName(EarlyMetric metric) { return EarlyMetricInfoOf(metric).name; }

// INVALID_ARGUMENT listing the known names when `name` is not one.
absl::StatusOr<EarlyMetric> ParseEarlyMetric(absl::string_view name);

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_EARLY_EARLY_METRIC_H_
