// Runs a planned Mitigate request (plans.h) for a batch of its seeds: the
// guard on each seed's x_T (core/early/mitigation.h), the samples from the
// seed's own x_T and from the moved one (same per-step noise), and each
// sample's spectrum, nearest neighbour and verdict, as an audit reports
// them. Runs on the calling thread (a worker of the request pool).
#ifndef MEMAUDIT_SERVER_MITIGATION_RUNNER_H_
#define MEMAUDIT_SERVER_MITIGATION_RUNNER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/stop.h"
#include "memaudit/v1/audit_service.pb.h"
#include "server/plans.h"

namespace memaudit::server {

// Seeds of a Mitigate request guarded together: one response per seed
// reaches the client at least this often, and the request pool is shared
// between batches.
inline constexpr int64_t kMitigationSeedsPerBatch = 8;

// One response per seed of `seeds` (a subset of plan.seeds), in order.
// Returns `stop`'s status when it says stop, and the engine's errors as it
// gives them (INTERNAL for LibTorch failures; FAILED_PRECONDITION e.g. for a
// model that returns non-finite values).
absl::StatusOr<std::vector<v1::MitigatedSample>> RunMitigation(const MitigatePlan& plan,
                                                               const std::vector<uint64_t>& seeds,
                                                               const StopCheck& stop);

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_MITIGATION_RUNNER_H_
