// Runs one planned audit (plans.h; docs/SERVICE.md): for each condition,
// n seeded samples, the spectrum at the evaluation timestep(s), nearest-
// neighbour truth when a reference set exists, per-sample, per-condition
// and model verdicts, early metrics when planned, timing. Runs on the
// calling thread (a worker of the job pool).
#ifndef MEMAUDIT_SERVER_AUDIT_RUNNER_H_
#define MEMAUDIT_SERVER_AUDIT_RUNNER_H_

#include <functional>

#include "absl/status/statusor.h"
#include "memaudit/v1/audit_service.pb.h"
#include "plans.h"
#include "stop.h"

namespace memaudit::server {

struct AuditCallbacks {
  // Each change of phase, and each finished batch (AUDIT_PHASE_MEASURED).
  std::function<void(const v1::AuditProgress&)> progress;
  // Each finished sample, in report order, before the next is started.
  std::function<void(const v1::SampleReport&)> sample;
  // Seconds per spectrum by method, for metrics.
  std::function<void(SpectrumMethod, double)> spectrum_seconds;
};

// Runs the audit; returns `stop`'s status when it says stop, INTERNAL for
// engine failures (LibTorch exceptions included).
absl::StatusOr<v1::AuditReport> RunAudit(const AuditPlan& plan, const StopCheck& stop,
                                         const AuditCallbacks& callbacks = {});

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_AUDIT_RUNNER_H_
