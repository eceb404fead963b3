// Memorization verdicts from curvature summaries (docs/VERDICTS.md).
//
// Default rule, per sample: any upward curvature (n₊ > max_positive) means a
// saddle, not a copy. Otherwise the peak's radius — the RMS spread of the
// local Gaussian its curvature implies — decides. It must be narrower than
// the noise at the evaluation step (noise radius < 1: MEMORIZED, < 2:
// PARTIAL) and, when a reference set gives the spacing of the training data,
// also narrower than a third of the gap to the next training item
// (radius/gap < 1/3: MEMORIZED, < 2/3: PARTIAL; 1/3 is the
// nearest-neighbour ratio test's own threshold). Both comparisons are free
// of the pixel scale. A policy that sets memorized_width uses the older
// width rule instead (calibrated thresholds from `memaudit calibrate`).
#ifndef MEMAUDIT_CORE_VERDICT_VERDICT_H_
#define MEMAUDIT_CORE_VERDICT_VERDICT_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "core/early/early_metric.h"
#include "core/spectra/spectrum.h"
#include "core/verdict/reference_set.h"
#include "core/verdict/verdict_rules.h"
#include "memaudit/v1/model_config.pb.h"

namespace memaudit {

const char* VerdictName(Verdict verdict);  // "NOT_MEMORIZED" | "PARTIAL" | "MEMORIZED"

enum class VerdictRule {
  kRadiusToSpacing,  // noise radius and radius / spacing (a spacing is known)
  kNoiseRadius,      // noise radius alone (no spacing known)
  kWidth,            // width / data_scale (policy sets memorized_width)
};
// "noise radius + radius/spacing" | "noise radius" | "width"
const char* VerdictRuleName(VerdictRule rule);

// Defaults of the VerdictPolicy fields (docs/VERDICTS.md says why).
inline constexpr double kDefaultMemorizedRadius = 1.0 / 3.0;
inline constexpr double kDefaultPartialRadius = 2.0 / 3.0;
inline constexpr double kDefaultMemorizedNoiseRadius = 1.0;
inline constexpr double kDefaultPartialNoiseRadius = 2.0;
inline constexpr double kDefaultConditionMemorizedFraction = 0.5;
inline constexpr double kDefaultModelMemorizedFraction = 0.1;

// A VerdictPolicy with every default filled in.
struct ResolvedPolicy {
  VerdictRule rule = VerdictRule::kNoiseRadius;
  int64_t max_positive_eigenvalues = 0;
  double memorized_radius = kDefaultMemorizedRadius;
  double partial_radius = kDefaultPartialRadius;
  double spacing = 0.0;  // data units; 0: unknown
  // Whether a sample's nearest-neighbour gap is in the sample's own units
  // and may replace `spacing` locally: false when the truth compares decoded
  // images while radii are measured in latent units.
  bool local_gap = true;
  double memorized_noise_radius = kDefaultMemorizedNoiseRadius;
  double partial_noise_radius = kDefaultPartialNoiseRadius;
  // Width rule (kWidth only).
  double memorized_width = 0.0;
  double partial_width = 0.0;
  double data_scale = 1.0;  // data units
  double condition_memorized_fraction = kDefaultConditionMemorizedFraction;
  double model_memorized_fraction = kDefaultModelMemorizedFraction;
  // Flag-early audits: the calibrated metric (none: not calibrated, and
  // early-only audits use label-free outlier flags) and its threshold.
  std::optional<EarlyMetric> early_metric;
  double early_threshold = 0.0;
};

// INVALID_ARGUMENT naming the field (as "verdict_policy.FIELD") when a value
// is negative, not finite, a fraction above 1, a partial threshold below
// its memorized one, or early_metric is not a known metric.
absl::Status ValidatePolicy(const v1::VerdictPolicy& policy);

// Fills defaults (policy assumed valid). The spacing comes from the policy,
// else from `reference` (may be null); the rule is kWidth when the policy
// sets memorized_width, else kRadiusToSpacing when a spacing is known, else
// kNoiseRadius. data_scale (width rule) from `reference` when unset.
ResolvedPolicy ResolvePolicy(const v1::VerdictPolicy& policy, const ReferenceSet* reference);

// RMS over elements of the per-element standard deviation of the items.
double DataScale(const ReferenceSet& reference);

// The sample's verdict (rules above). Under kRadiusToSpacing the spacing is the gap
// around the sample's nearest reference item when `nearest` is given (the
// local spacing where it landed: dense regions of the data have small gaps,
// an isolated duplicated item a large one), else policy.spacing. The width
// rule flags widths at or below its thresholds (they are calibrated from
// observed widths). A matrix-free summary with unconverged eigenvalues
// (summary.unconverged > 0) is at most PARTIAL: the flattest direction may
// be among those left out.
Verdict JudgeSample(const SpectrumSummary& summary, const ResolvedPolicy& policy,
                    const NearestNeighbor* nearest = nullptr);

// A condition's verdict from its samples' verdict counts
// (ConditionVerdictFromCounts with the policy's fraction).
Verdict JudgeCondition(int64_t memorized, int64_t partial, int64_t total,
                       const ResolvedPolicy& policy);

// The model's verdict (what a release gate reads): MEMORIZED when the worst
// condition is, or when memorized_samples ≥ model_memorized_fraction ×
// total_samples; otherwise the worst condition's verdict
// (ModelVerdictFromCounts with the policy's fraction).
Verdict JudgeModel(Verdict worst_condition, int64_t memorized_samples, int64_t total_samples,
                   const ResolvedPolicy& policy);

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_VERDICT_VERDICT_H_
