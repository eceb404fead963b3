// An audit fanned out across replicas of memaudit-server: split into shards
// (fanout.h), submitted round-robin to the replicas, followed to the end,
// and merged into the report one server would have made. A shard whose
// replica fails is resubmitted to another live replica.
#ifndef MEMAUDIT_CLIENT_FANOUT_RUNNER_H_
#define MEMAUDIT_CLIENT_FANOUT_RUNNER_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/client.h"
#include "client/fanout.h"
#include "client/targets.h"
#include "memaudit/v1/audit_service.pb.h"

namespace memaudit::client {

// Where the whole audit stands, after one shard's progress event.
struct FanoutProgress {
  // samples_done and samples_total summed over all shards (a finished shard
  // counts whole, a resubmitted one starts again from 0); phase and
  // condition of the shard whose event this is.
  v1::AuditProgress progress;
  int64_t shard = 0;    // that shard's index
  int64_t shards = 0;   // how many shards
  std::string replica;  // where it runs
};

struct FanoutOptions {
  int64_t shards = 0;                         // shards to split into; 0: one per replica
  int per_replica = 2;                        // shards a replica has at once, at most
  std::chrono::milliseconds timeout{300000};  // unary calls (Client's timeout)
  // Client's keepalive: a replica that stops answering pings (frozen, or
  // partitioned away) fails within about twice this, and its shards move.
  std::chrono::milliseconds keepalive = Client::kDefaultKeepalive;
  ChannelSecurity security;  // for every replica (server_name from the Replica's name
                             // when unset and TLS is on)
  // Polled every 100 ms: true cancels every shard's job and ends the run
  // with CANCELLED "interrupted".
  std::function<bool()> interrupted;
  // Called on every shard's progress event, and with a line for each
  // shard resubmitted after its replica failed. Never concurrently.
  std::function<void(const FanoutProgress&)> on_progress;
  std::function<void(const std::string&)> on_notice;
};

struct FanoutResult {
  v1::AuditReport report;  // merged (MergeShardReports)
  // Of each shard, in index order: "ADDRESS/JOB-ID" of the job that
  // finished it.
  std::vector<std::string> jobs;
};

// Runs `request` over `replicas`. A shard goes to the next live replica in
// round-robin order that has fewer than per_replica shards, and is
// followed with WatchAudit. A replica fails when a call to it is
// UNAVAILABLE or DEADLINE_EXCEEDED (down, unreachable, connection lost, no
// answer to keepalive pings: a frozen process or a partition) or
// a shard's job ends CANCELLED without this run cancelling it (the server
// shut down): it gets no more shards, and its shards are resubmitted to
// other live replicas. Any other error of a shard (INVALID_ARGUMENT,
// NOT_FOUND, a FAILED job, ...) cancels the other shards' jobs and is
// returned, naming the shard and the replica; so is UNAVAILABLE once every
// replica has failed. Errors of the merge as MergeShardReports (e.g.
// FAILED_PRECONDITION for replicas that serve different model files).
absl::StatusOr<FanoutResult> RunFannedOutAudit(const std::vector<Replica>& replicas,
                                               const v1::AuditRequest& request,
                                               const FanoutOptions& options);

}  // namespace memaudit::client

#endif  // MEMAUDIT_CLIENT_FANOUT_RUNNER_H_
