// The Calibrate RPC's work on a planned request (plans.h): per-condition
// curvature and early metrics for labelled conditions, their ROC summaries,
// and a verdict_policy block to paste into the model's config.
#ifndef MEMAUDIT_SERVER_CALIBRATION_RUNNER_H_
#define MEMAUDIT_SERVER_CALIBRATION_RUNNER_H_

#include <string>

#include "absl/status/statusor.h"
#include "core/base/stop.h"
#include "memaudit/v1/audit_service.pb.h"
#include "server/plans.h"

namespace memaudit::server {

// The stop status when `stop` says stop; INTERNAL for engine failures.
absl::StatusOr<v1::CalibrationResponse> RunCalibration(const CalibrationPlan& plan,
                                                       const StopCheck& stop);

// The verdict_policy block to paste into the model's config: the width
// thresholds (in units of `data_scale`, which it also sets) and the early
// metric with the best AUC among those with a finite threshold at FPR ≤ 1%
// (the anisotropy, a score among conditions, never). Numbers are written so
// that they read back exactly: a threshold is an observed score, and a
// sample at it is flagged (JudgeSample's ≤, the early rule's ≥).
std::string SuggestedPolicy(const v1::CalibrationResponse& response, double data_scale);

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_CALIBRATION_RUNNER_H_
