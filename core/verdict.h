// Memorization verdicts from curvature summaries (DESIGN.md §2 "Verdicts").
//
// Default policy: any upward curvature (n₊ > max_positive_eigenvalues) means
// a saddle, not a copy. Otherwise the peak's width w along its flattest
// direction, relative to the data's own scale, decides: w below
// memorized_width·scale is MEMORIZED, below partial_width·scale PARTIAL.
#ifndef MEMAUDIT_CORE_VERDICT_H_
#define MEMAUDIT_CORE_VERDICT_H_

#include <cstdint>
#include <string>

#include "memaudit/v1/model_config.pb.h"
#include "reference_set.h"
#include "spectrum.h"

namespace memaudit {

enum class Verdict { kNotMemorized, kPartial, kMemorized };
const char* VerdictName(Verdict verdict);  // "NOT_MEMORIZED" | "PARTIAL" | "MEMORIZED"

// A VerdictPolicy with every default filled in.
struct ResolvedPolicy {
  int64_t max_positive_eigenvalues = 0;
  double memorized_width = 0.1;
  double partial_width = 0.25;
  double data_scale = 1.0;  // data units
  double condition_memorized_fraction = 0.5;
  // Flag-early audits: empty metric means not calibrated.
  std::string early_metric;
  double early_threshold = 0.0;
};

// Fills defaults; data_scale from `reference` (RMS per-element standard
// deviation) when the config leaves it 0 and a reference set is given.
ResolvedPolicy ResolvePolicy(const v1::VerdictPolicy& policy, const ReferenceSet* reference);

// RMS over elements of the per-element standard deviation of the items.
double DataScale(const ReferenceSet& reference);

Verdict JudgeSample(const SpectrumSummary& summary, const ResolvedPolicy& policy);

// A condition's verdict from its samples' verdict counts.
Verdict JudgeCondition(int64_t memorized, int64_t partial, int64_t total,
                       const ResolvedPolicy& policy);

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_VERDICT_H_
