// Splitting an audit into shards and merging the shards' reports into the
// report one server would have made. Pure functions, no network: the
// fan-out across replicas (fanout_runner.h) and the batch commands
// (`memaudit audit --shard-index`, `memaudit merge`) share them.
//
// The sharding rule. An audit of C conditions (an audit without conditions
// counts as one: its report has one) and S samples per condition, split N
// ways:
//   - C ≥ N: N contiguous blocks of whole conditions, sizes differing by at
//     most one (the first C mod N blocks are the larger);
//   - C < N: every condition is cut into blocks of samples, condition c into
//     N/C blocks, one more for the first N mod C conditions (never more
//     blocks than samples). A block [first, first + n) runs with
//     seed + first and n samples per condition: sample i of a condition uses
//     seed + i, so the shards draw exactly the samples the whole audit would.
// Audits with early metrics (early_only, or early_steps > 0) are never
// split: every condition's early_outlier_z, and a label-free early-only
// audit's verdicts, compare the condition with all the audit's other
// conditions, and the early metrics of a condition are one batch over all
// its samples.
#ifndef MEMAUDIT_CLIENT_FANOUT_H_
#define MEMAUDIT_CLIENT_FANOUT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "memaudit/v1/audit_service.pb.h"
#include "proto/audit_defaults.h"

namespace memaudit::client {

struct ShardRequest {
  v1::AuditShard shard;      // which part of the audit
  v1::AuditRequest request;  // what to submit for it
};

// Whether `request` may be split into more than one shard (above).
bool CanSplitAudit(const v1::AuditRequest& request);

// The shards of `request` split `count` ways, in index order; a condition's
// samples only at multiples of kAuditSamplesPerBatch. Fewer than `count`
// when the audit has fewer conditions × batches, or cannot be split
// (then one shard: the request itself, with its default sample count filled
// in). INVALID_ARGUMENT for count < 1 or a negative samples_per_condition.
absl::StatusOr<std::vector<ShardRequest>> SplitAudit(const v1::AuditRequest& request,
                                                     int64_t count);

// A shard's report and where it came from (a replica's address, a file
// name) for messages.
struct ShardReport {
  std::string source;
  v1::AuditReport report;  // with `shard` set
};

// The report of the whole audit, as one server would have made it from the
// same request: conditions in request order, samples in seed order, the
// counts summed, a condition whose samples were split judged again from its
// counts, the model verdict judged again (both with the count-only rules of
// core/verdict/verdict_rules.h and the policy the shards report), shard cleared.
// Timing: total and queued are the longest shard's (shards run side by
// side), sampling and curvature are summed (the work done). The device is
// the shards' device, or their different devices joined by ", ".
//
// Errors, each naming the shards' sources:
//   INVALID_ARGUMENT   a report without a shard; shards of different splits
//                      (count, conditions, samples) or requests (seeds that
//                      differ, or a condition two shards share that differs:
//                      reports do not carry the request, so other conditions
//                      cannot be compared); a shard given twice, missing, or
//                      overlapping another; a report that does not hold what
//                      its shard says;
//   FAILED_PRECONDITION  shards that audited different models, model files
//                      (checksums: replicas serving different versions) or
//                      verdict policies; several shards with early metrics.
absl::StatusOr<v1::AuditReport> MergeShardReports(const std::vector<ShardReport>& shards);

}  // namespace memaudit::client

#endif  // MEMAUDIT_CLIENT_FANOUT_H_
