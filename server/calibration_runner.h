// The Calibrate RPC's work on a planned request (plans.h): per-condition
// curvature and early metrics for labelled conditions, their ROC summaries,
// and a verdict_policy block to paste into the model's config.
#ifndef MEMAUDIT_SERVER_CALIBRATION_RUNNER_H_
#define MEMAUDIT_SERVER_CALIBRATION_RUNNER_H_

#include "absl/status/statusor.h"
#include "core/base/stop.h"
#include "memaudit/v1/audit_service.pb.h"
#include "server/plans.h"

namespace memaudit::server {

// The stop status when `stop` says stop; INTERNAL for engine failures.
absl::StatusOr<v1::CalibrationResponse> RunCalibration(const CalibrationPlan& plan,
                                                       const StopCheck& stop);

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_CALIBRATION_RUNNER_H_
