#include "core/verdict/verdict.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"

namespace memaudit {

const char* VerdictName(Verdict verdict) {
  switch (verdict) {
    case Verdict::kMemorized:
      return "MEMORIZED";
    case Verdict::kPartial:
      return "PARTIAL";
    case Verdict::kNotMemorized:
      return "NOT_MEMORIZED";
  }
  return "UNKNOWN";
}

const char* VerdictRuleName(VerdictRule rule) {
  switch (rule) {
    case VerdictRule::kRadiusToSpacing:
      return "noise radius + radius/spacing";
    case VerdictRule::kNoiseRadius:
      return "noise radius";
    case VerdictRule::kWidth:
      return "width";
  }
  return "unknown";
}

double DataScale(const ReferenceSet& reference) {
  c10::NoGradGuard no_grad;
  at::Tensor items = reference.items().reshape({reference.size(), -1}).to(at::kDouble);
  return std::sqrt(items.var(0, /*unbiased=*/false).mean().item<double>());
}

namespace {

absl::Status CheckNonNegative(const char* field, double value) {
  if (!std::isfinite(value) || value < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("verdict_policy.", field, " must be a finite number >= 0, got ", value));
  }
  return absl::OkStatus();
}

absl::Status CheckFraction(const char* field, double value) {
  RETURN_IF_ERROR(CheckNonNegative(field, value));
  if (value > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("verdict_policy.", field, " is a fraction and must be <= 1, got ", value));
  }
  return absl::OkStatus();
}

// partial (if set) must not be below memorized (if set, else its default).
absl::Status CheckOrder(const char* partial_field, double partial, const char* memorized_field,
                        double memorized, double memorized_default) {
  const double effective = memorized > 0 ? memorized : memorized_default;
  if (partial > 0 && partial < effective) {
    return absl::InvalidArgumentError(absl::StrCat("verdict_policy.", partial_field, " (", partial,
                                                   ") must be >= ", memorized_field, " (",
                                                   effective, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidatePolicy(const v1::VerdictPolicy& policy) {
  if (policy.max_positive_eigenvalues() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("verdict_policy.max_positive_eigenvalues must be >= 0, got ",
                     policy.max_positive_eigenvalues()));
  }
  const std::pair<const char*, double> non_negative[] = {
      {"memorized_radius", policy.memorized_radius()},
      {"partial_radius", policy.partial_radius()},
      {"spacing", policy.spacing()},
      {"memorized_noise_radius", policy.memorized_noise_radius()},
      {"partial_noise_radius", policy.partial_noise_radius()},
      {"memorized_width", policy.memorized_width()},
      {"partial_width", policy.partial_width()},
      {"data_scale", policy.data_scale()},
  };
  for (const auto& [field, value] : non_negative) RETURN_IF_ERROR(CheckNonNegative(field, value));
  RETURN_IF_ERROR(
      CheckFraction("condition_memorized_fraction", policy.condition_memorized_fraction()));
  RETURN_IF_ERROR(CheckFraction("model_memorized_fraction", policy.model_memorized_fraction()));
  RETURN_IF_ERROR(CheckOrder("partial_radius", policy.partial_radius(), "memorized_radius",
                             policy.memorized_radius(), kDefaultMemorizedRadius));
  RETURN_IF_ERROR(CheckOrder("partial_noise_radius", policy.partial_noise_radius(),
                             "memorized_noise_radius", policy.memorized_noise_radius(),
                             kDefaultMemorizedNoiseRadius));
  if (policy.partial_width() > 0 && policy.memorized_width() == 0) {
    return absl::InvalidArgumentError(
        "verdict_policy.partial_width needs memorized_width (the width rule)");
  }
  RETURN_IF_ERROR(CheckOrder("partial_width", policy.partial_width(), "memorized_width",
                             policy.memorized_width(), 0.0));
  if (!policy.early_metric().empty()) {
    auto metric = ParseEarlyMetric(policy.early_metric());
    if (!metric.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("verdict_policy.early_metric: ", metric.status().message()));
    }
    if (!EarlyMetricInfoOf(*metric).signed_values) {
      RETURN_IF_ERROR(CheckNonNegative("early_threshold", policy.early_threshold()));
    }
    if (EarlyMetricInfoOf(*metric).among_conditions) {
      return absl::InvalidArgumentError(absl::StrCat(
          "verdict_policy.early_metric: \"", policy.early_metric(),
          "\" scores a condition against the others audited with it, so a threshold on it "
          "does not carry over to another audit; use it label-free (audit --early-only "
          "without a calibrated policy) or calibrate one of its parts (anisotropy_norm, "
          "anisotropy_alignment)"));
    }
  }
  return absl::OkStatus();
}

ResolvedPolicy ResolvePolicy(const v1::VerdictPolicy& policy, const ReferenceSet* reference) {
  ResolvedPolicy resolved;
  const auto set = [](double value, double* field) {
    if (value > 0) *field = value;
  };
  if (policy.max_positive_eigenvalues() > 0) {
    resolved.max_positive_eigenvalues = policy.max_positive_eigenvalues();
  }
  set(policy.memorized_radius(), &resolved.memorized_radius);
  set(policy.partial_radius(), &resolved.partial_radius);
  resolved.partial_radius = std::max(resolved.partial_radius, resolved.memorized_radius);
  set(policy.memorized_noise_radius(), &resolved.memorized_noise_radius);
  set(policy.partial_noise_radius(), &resolved.partial_noise_radius);
  resolved.partial_noise_radius =
      std::max(resolved.partial_noise_radius, resolved.memorized_noise_radius);
  set(policy.condition_memorized_fraction(), &resolved.condition_memorized_fraction);
  set(policy.model_memorized_fraction(), &resolved.model_memorized_fraction);
  if (!policy.early_metric().empty()) {
    auto metric = ParseEarlyMetric(policy.early_metric());
    if (metric.ok()) resolved.early_metric = *metric;
  }
  resolved.early_threshold = policy.early_threshold();
  if (policy.spacing() > 0) {
    resolved.spacing = policy.spacing();
  } else if (reference != nullptr && reference->spacing() > 0 &&
             std::isfinite(reference->spacing())) {
    resolved.spacing = reference->spacing();
  }
  if (policy.data_scale() > 0) {
    resolved.data_scale = policy.data_scale();
  } else if (reference != nullptr) {
    const double scale = DataScale(*reference);
    if (scale > 0 && std::isfinite(scale)) resolved.data_scale = scale;
  }
  if (policy.memorized_width() > 0) {
    resolved.rule = VerdictRule::kWidth;
    resolved.memorized_width = policy.memorized_width();
    resolved.partial_width = std::max(policy.partial_width(), policy.memorized_width());
  } else {
    resolved.rule =
        resolved.spacing > 0 ? VerdictRule::kRadiusToSpacing : VerdictRule::kNoiseRadius;
  }
  return resolved;
}

namespace {

// JudgeSample's rules on the eigenvalues the summary holds.
Verdict JudgeFoundEigenvalues(const SpectrumSummary& summary, const ResolvedPolicy& policy,
                              const NearestNeighbor* nearest) {
  if (summary.positive_count > policy.max_positive_eigenvalues) return Verdict::kNotMemorized;
  // NaN (an unknown radius) compares false throughout: NOT_MEMORIZED.
  if (policy.rule == VerdictRule::kWidth) {
    const double width = summary.width / policy.data_scale;
    // At or below: calibrated thresholds are observed widths, flagged
    // themselves (ComputeRoc).
    if (width <= policy.memorized_width) return Verdict::kMemorized;
    if (width <= policy.partial_width) return Verdict::kPartial;
    return Verdict::kNotMemorized;
  }
  // Narrower than the noise at the evaluation step, and — when the spacing
  // of the training data is known — narrower than a third of the gap to the
  // next training item: both must hold (a reference set only adds caution).
  double spacing_ratio = 0.0;
  if (policy.rule == VerdictRule::kRadiusToSpacing) {
    const bool local =
        policy.local_gap && nearest != nullptr && std::isfinite(nearest->gap) && nearest->gap > 0;
    spacing_ratio = summary.radius / (local ? nearest->gap : policy.spacing);
  }
  if (summary.noise_radius < policy.memorized_noise_radius &&
      spacing_ratio < policy.memorized_radius) {
    return Verdict::kMemorized;
  }
  if (summary.noise_radius < policy.partial_noise_radius && spacing_ratio < policy.partial_radius) {
    return Verdict::kPartial;
  }
  return Verdict::kNotMemorized;
}

}  // namespace

Verdict JudgeSample(const SpectrumSummary& summary, const ResolvedPolicy& policy,
                    const NearestNeighbor* nearest) {
  const Verdict verdict = JudgeFoundEigenvalues(summary, policy, nearest);
  // Eigenvalues that did not converge are left out of the summary, which
  // can only have made it sharper (fewer upward directions, a more negative
  // κ_max): what they hide is unknown, so the sample is at most PARTIAL.
  if (summary.unconverged > 0 && verdict == Verdict::kMemorized) return Verdict::kPartial;
  return verdict;
}

Verdict JudgeCondition(int64_t memorized, int64_t partial, int64_t total,
                       const ResolvedPolicy& policy) {
  return ConditionVerdictFromCounts(memorized, partial, total, policy.condition_memorized_fraction);
}

Verdict JudgeModel(Verdict worst_condition, int64_t memorized_samples, int64_t total_samples,
                   const ResolvedPolicy& policy) {
  return ModelVerdictFromCounts(worst_condition, memorized_samples, total_samples,
                                policy.model_memorized_fraction);
}

}  // namespace memaudit
