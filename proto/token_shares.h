// The share of each token in a memaudit.v1.TokenAttribution, one rule for
// the server that computes the scores and the client that merges a fan-out's
// parts: a token's positive deletion score over the sum of all positive
// scores; 0 for every token when no score is positive (no token's deletion
// lowers the metric, so none is named).
#ifndef MEMAUDIT_PROTO_TOKEN_SHARES_H_
#define MEMAUDIT_PROTO_TOKEN_SHARES_H_

#include "memaudit/v1/audit_service.pb.h"

namespace memaudit {

// Sets every token's share from the scores. Thread-compatible.
void SetTokenShares(v1::TokenAttribution& attribution);

}  // namespace memaudit

#endif  // MEMAUDIT_PROTO_TOKEN_SHARES_H_
