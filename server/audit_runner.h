// Runs one audit (docs/SERVICE.md) on a loaded model: for each condition,
// n seeded samples, the spectrum at the evaluation timestep(s), nearest-
// neighbour truth when a reference set exists, per-sample and per-condition
// verdicts, timing. Runs on the calling thread (a worker of the job pool).
#ifndef MEMAUDIT_SERVER_AUDIT_RUNNER_H_
#define MEMAUDIT_SERVER_AUDIT_RUNNER_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "memaudit/v1/audit_service.pb.h"
#include "model_registry.h"
#include "stop.h"

namespace memaudit::server {

inline constexpr int64_t kDefaultSamplesPerCondition = 16;
inline constexpr int64_t kMaxSamplesPerCondition = 100000;
inline constexpr int64_t kMaxConditions = 10000;

struct AuditCallbacks {
  std::function<void(const v1::AuditProgress&)> progress;
  std::function<void(const v1::SampleReport&)> sample;
  // Method ("dense" / "arnoldi") and seconds per spectrum, for metrics.
  std::function<void(const std::string&, double)> spectrum_seconds;
};

// Validates `request` against `model` without running anything:
// INVALID_ARGUMENT naming the field.
absl::Status ValidateAuditRequest(const v1::AuditRequest& request, const LoadedModel& model);

// Runs the audit; returns `stop`'s status when it says stop.
absl::StatusOr<v1::AuditReport> RunAudit(const v1::AuditRequest& request, const LoadedModel& model,
                                         const StopCheck& stop,
                                         const AuditCallbacks& callbacks = {});

v1::Verdict ToProtoVerdict(Verdict verdict);

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_AUDIT_RUNNER_H_
