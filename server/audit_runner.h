// Runs one planned audit (plans.h; docs/SERVICE.md): for each condition,
// n seeded samples, the spectrum at the evaluation timestep(s), nearest-
// neighbour truth when a reference set exists, per-sample, per-condition
// and model verdicts, early metrics when planned, timing. Runs on the
// calling thread (a worker of the job pool).
#ifndef MEMAUDIT_SERVER_AUDIT_RUNNER_H_
#define MEMAUDIT_SERVER_AUDIT_RUNNER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/stop.h"
#include "memaudit/v1/audit_service.pb.h"
#include "server/plans.h"

namespace memaudit::server {

struct AuditCallbacks {
  // Each change of phase, and each finished batch (AUDIT_PHASE_MEASURED).
  std::function<void(const v1::AuditProgress&)> progress;
  // Each finished batch of samples, in report order, before the next batch
  // is started: samples [first, first + samples.size()) of the request's
  // condition `condition`, and the progress after it. A non-OK status (e.g.
  // the job store could not save it) ends the audit with that status.
  std::function<absl::Status(int64_t condition, int64_t first,
                             const std::vector<v1::SampleReport>& samples,
                             const v1::AuditProgress& progress)>
      batch;
  // Each finished condition (its report with samples, verdict and early
  // metrics; the audit-level outlier scores come later), and the progress
  // after it. Non-OK ends the audit.
  std::function<absl::Status(int64_t condition, const v1::ConditionReport& report,
                             const v1::AuditProgress& progress)>
      condition;
  // Seconds per spectrum by method, for metrics.
  std::function<void(SpectrumMethod, double)> spectrum_seconds;
};

// What an interrupted run of the same plan finished (a restarted server's
// job store): the audit takes these as they are and measures only the rest.
// A condition's samples must be a prefix in sample order; only whole
// batches of it are used (batch boundaries stay where an uninterrupted run
// has them, so every sample is computed exactly as it would have been).
struct AuditResume {
  // Finished conditions with all their samples, by condition index.
  std::map<int64_t, v1::ConditionReport> conditions;
  // Finished samples of unfinished conditions, by condition index.
  std::map<int64_t, std::vector<v1::SampleReport>> samples;
  // The time the stored work took (the stored progress' timing): the run's
  // progress and report timing continue from it.
  v1::AuditTiming timing;
};

// Runs the audit; returns `stop`'s status when it says stop, INTERNAL for
// engine failures (LibTorch exceptions included).
absl::StatusOr<v1::AuditReport> RunAudit(const AuditPlan& plan, const StopCheck& stop,
                                         const AuditCallbacks& callbacks = {},
                                         const AuditResume& resume = {});

// How many of a condition's `stored` finished samples a resumed run reuses:
// the longest prefix made of whole batches, or all of them when they are
// every sample of the condition.
int64_t ReusableSamples(int64_t stored, int64_t samples_per_condition);

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_AUDIT_RUNNER_H_
