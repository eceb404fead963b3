// How `memaudit mitigate` presents the guard's results: a per-seed table
// with totals, and the --json form.
#ifndef MEMAUDIT_CLIENT_MITIGATION_FORMAT_H_
#define MEMAUDIT_CLIENT_MITIGATION_FORMAT_H_

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "memaudit/v1/audit_service.pb.h"

namespace memaudit::client {

// Totals over the seeds of one run: what the guard changed.
struct MitigationTotals {
  int64_t seeds = 0;
  int64_t copies_before = 0, copies_after = 0;        // nearest neighbour says copy
  int64_t memorized_before = 0, memorized_after = 0;  // verdict MEMORIZED
  double mean_sharpness_before = 0, mean_sharpness_after = 0;
  double mean_steps = 0;
  double mean_initial_noise_change = 0;
  double mean_guard_seconds = 0;
  bool has_truth = false;  // the model has a reference set
};
MitigationTotals SumMitigation(const std::vector<v1::MitigatedSample>& results);

// One line per seed (sharpness, steps, how far x_T moved, verdict and
// nearest neighbour before → after), then the totals.
std::string MitigationText(const std::vector<v1::MitigatedSample>& results);

// {model, metric ("jeon" | "hessian_score"), totals{...}, seeds[{seed,
// sharpness_before, sharpness_after, steps, initial_noise_change,
// guard_seconds, before{…}, after{…}}]}; before/after are samples of the
// --json audit report (SampleReportJson). Tensors are left out.
nlohmann::json MitigationJson(const std::string& model,
                              const std::vector<v1::MitigatedSample>& results);

}  // namespace memaudit::client

#endif  // MEMAUDIT_CLIENT_MITIGATION_FORMAT_H_
