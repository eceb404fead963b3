// The count-only verdict rules: a condition's verdict from its samples'
// verdict counts, and the model's verdict from the worst condition and the
// memorized fraction. Plain numbers only, no LibTorch: the server's audits
// (verdict.h's JudgeCondition and JudgeModel) and the client's merge of
// shard reports (client/fanout.h) must judge alike.
#ifndef MEMAUDIT_CORE_VERDICT_VERDICT_RULES_H_
#define MEMAUDIT_CORE_VERDICT_VERDICT_RULES_H_

#include <cstdint>

namespace memaudit {

// Ordered: a larger value is a worse verdict.
enum class Verdict { kNotMemorized, kPartial, kMemorized };

// MEMORIZED when at least one and at least `condition_memorized_fraction` ×
// `total` of the samples are memorized; PARTIAL when any sample is memorized
// or partial; NOT_MEMORIZED otherwise (also for total ≤ 0).
Verdict ConditionVerdictFromCounts(int64_t memorized, int64_t partial, int64_t total,
                                   double condition_memorized_fraction);

// MEMORIZED when `worst_condition` is, or when memorized_samples > 0 and
// memorized_samples ≥ model_memorized_fraction × total_samples; otherwise
// `worst_condition`.
Verdict ModelVerdictFromCounts(Verdict worst_condition, int64_t memorized_samples,
                               int64_t total_samples, double model_memorized_fraction);

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_VERDICT_VERDICT_RULES_H_
