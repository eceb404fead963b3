// Defaults of memaudit.v1 request fields that both sides must agree on: the
// server fills them in for a field left 0, and the client's fan-out splits
// work by them. The .proto comments state the same values.
#ifndef MEMAUDIT_PROTO_AUDIT_DEFAULTS_H_
#define MEMAUDIT_PROTO_AUDIT_DEFAULTS_H_

#include <cstdint>

namespace memaudit {

// AuditRequest.samples_per_condition when 0.
inline constexpr int64_t kDefaultSamplesPerCondition = 16;

// Samples of a condition the server measures together, from the
// condition's first: network calls batch them, and a batch's composition
// sets the last bits of its results. The fan-out splits a condition's
// samples only at multiples of it, so each shard batches as one server.
inline constexpr int64_t kAuditSamplesPerBatch = 8;

}  // namespace memaudit

#endif  // MEMAUDIT_PROTO_AUDIT_DEFAULTS_H_
