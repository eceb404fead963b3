// The replicas an address names: the CLI's --server takes one HOST:PORT, a
// comma-separated list of them, gRPC's own "ipv4:" / "ipv6:" address lists,
// or "dns:///NAME:PORT", which the client resolves itself to every address
// the name has. The fan-out (fanout_runner.h) needs the individual replicas
// because an audit job lives on the replica that accepted it: its shards must
// stick to one address each, which a gRPC channel over a name with several
// addresses does not promise (and gRPC's C++ API does not expose the
// addresses a channel resolved).
#ifndef MEMAUDIT_CLIENT_TARGETS_H_
#define MEMAUDIT_CLIENT_TARGETS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace memaudit::client {

struct Replica {
  // A gRPC target for exactly this replica: "HOST:PORT", "1.2.3.4:P",
  // "[::1]:P", or `spec` itself when it is a single target of another kind.
  std::string address;
  // The name the replica was found under, for checking TLS certificates:
  // the DNS name of a "dns:" target (whose addresses are numeric); "" when
  // `address` already carries its host.
  std::string name;

  bool operator==(const Replica&) const = default;
};

// The replicas of `spec`, in the order given (DNS: getaddrinfo's order,
// duplicates removed):
//   "HOST:PORT"                   one replica, `spec` itself, its port checked
//                                 (single unix:, unix-abstract:, vsock: and
//                                 SCHEME:// targets go to gRPC unchecked)
//   "H1:P1,H2:P2,..."             one per entry; each must be HOST:PORT or
//                                 [IPV6]:PORT
//   "ipv4:A1:P1,A2:P2"            gRPC's syntax: numeric IPv4 addresses
//   "ipv6:[A1]:P1,[A2]:P2"        numeric IPv6 addresses in brackets
//   "dns:///NAME:PORT", "dns:NAME:PORT"  every address NAME resolves to (no
//                                 DNS authority: "dns://AUTHORITY/..." is
//                                 refused)
// Ports must be 1..65535. INVALID_ARGUMENT naming the bad part (an empty
// entry, a missing or bad port, an address that is not numeric where it must
// be); a name that does not resolve is UNAVAILABLE with the resolver's
// reason.
absl::StatusOr<std::vector<Replica>> ResolveReplicas(absl::string_view spec);

// ResolveReplicas' syntax checks without resolving any name: the replicas
// `spec` lists (a "dns:" target counts as one, unresolved), or the
// INVALID_ARGUMENT ResolveReplicas would return. Every CLI command checks
// --server with it before dialling.
absl::StatusOr<std::vector<Replica>> ParseServerAddress(absl::string_view spec);

// A job and the server it lives on. The fan-out names each shard's job
// "ADDRESS/ID" (a fanned-out report's job_id lists them, comma-separated);
// job ids themselves never contain '/' or ','.
struct JobRef {
  std::string address;  // "" when the job is on the default server (--server)
  std::string id;

  bool operator==(const JobRef&) const = default;
};

// "ID" is {"", ID}; "ADDRESS/ID" splits at the last '/' and checks ADDRESS
// as one server (ParseServerAddress). INVALID_ARGUMENT, quoting `text`, for
// an empty id or address, several jobs ("A/1,B/2": the shards of a
// fanned-out audit, one at a time), or a malformed address.
absl::StatusOr<JobRef> ParseJobRef(absl::string_view text);

}  // namespace memaudit::client

#endif  // MEMAUDIT_CLIENT_TARGETS_H_
