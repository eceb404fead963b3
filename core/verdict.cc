#include "verdict.h"

#include <ATen/ATen.h>

#include <cmath>

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

double DataScale(const ReferenceSet& reference) {
  at::NoGradGuard no_grad;
  at::Tensor items = reference.items().reshape({reference.size(), -1}).to(at::kDouble);
  return std::sqrt(items.var(0, /*unbiased=*/false).mean().item<double>());
}

ResolvedPolicy ResolvePolicy(const v1::VerdictPolicy& policy, const ReferenceSet* reference) {
  ResolvedPolicy resolved;
  if (policy.max_positive_eigenvalues() > 0) {
    resolved.max_positive_eigenvalues = policy.max_positive_eigenvalues();
  }
  if (policy.memorized_width() > 0) resolved.memorized_width = policy.memorized_width();
  if (policy.partial_width() > 0) resolved.partial_width = policy.partial_width();
  if (policy.condition_memorized_fraction() > 0) {
    resolved.condition_memorized_fraction = policy.condition_memorized_fraction();
  }
  resolved.early_metric = policy.early_metric();
  resolved.early_threshold = policy.early_threshold();
  if (policy.data_scale() > 0) {
    resolved.data_scale = policy.data_scale();
  } else if (reference != nullptr) {
    const double scale = DataScale(*reference);
    if (scale > 0 && std::isfinite(scale)) resolved.data_scale = scale;
  }
  return resolved;
}

Verdict JudgeSample(const SpectrumSummary& summary, const ResolvedPolicy& policy) {
  if (summary.positive_count > policy.max_positive_eigenvalues) return Verdict::kNotMemorized;
  if (summary.width < policy.memorized_width * policy.data_scale) return Verdict::kMemorized;
  if (summary.width < policy.partial_width * policy.data_scale) return Verdict::kPartial;
  return Verdict::kNotMemorized;
}

Verdict JudgeCondition(int64_t memorized, int64_t partial, int64_t total,
                       const ResolvedPolicy& policy) {
  if (total <= 0) return Verdict::kNotMemorized;
  if (static_cast<double>(memorized) >= policy.condition_memorized_fraction * total) {
    return Verdict::kMemorized;
  }
  if (memorized > 0 || partial > 0) return Verdict::kPartial;
  return Verdict::kNotMemorized;
}

}  // namespace memaudit
