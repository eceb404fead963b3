// The Calibrate RPC's work: per-condition curvature and early metrics for
// labelled conditions, their ROC summaries, and a verdict_policy block.
#ifndef MEMAUDIT_SERVER_CALIBRATION_RUNNER_H_
#define MEMAUDIT_SERVER_CALIBRATION_RUNNER_H_

#include "absl/status/statusor.h"
#include "memaudit/v1/audit_service.pb.h"
#include "model_registry.h"
#include "stop.h"

namespace memaudit::server {

// INVALID_ARGUMENT naming the field for bad requests (each set needs at
// least 2 conditions); the stop status when `stop` says stop.
absl::StatusOr<v1::CalibrationResponse> RunCalibration(const v1::CalibrationRequest& request,
                                                       const LoadedModel& model,
                                                       const StopCheck& stop);

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_CALIBRATION_RUNNER_H_
