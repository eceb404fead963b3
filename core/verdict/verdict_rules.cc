#include "core/verdict/verdict_rules.h"

namespace memaudit {

Verdict ConditionVerdictFromCounts(int64_t memorized, int64_t partial, int64_t total,
                                   double condition_memorized_fraction) {
  if (total <= 0) return Verdict::kNotMemorized;
  if (memorized > 0 &&
      static_cast<double>(memorized) >= condition_memorized_fraction * static_cast<double>(total)) {
    return Verdict::kMemorized;
  }
  if (memorized > 0 || partial > 0) return Verdict::kPartial;
  return Verdict::kNotMemorized;
}

Verdict ModelVerdictFromCounts(Verdict worst_condition, int64_t memorized_samples,
                               int64_t total_samples, double model_memorized_fraction) {
  if (worst_condition == Verdict::kMemorized) return Verdict::kMemorized;
  if (total_samples > 0 && memorized_samples > 0 &&
      static_cast<double>(memorized_samples) >=
          model_memorized_fraction * static_cast<double>(total_samples)) {
    return Verdict::kMemorized;
  }
  return worst_condition;
}

}  // namespace memaudit
