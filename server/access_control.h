// Access control: bearer tokens with roles, checked per RPC.
//
// Tokens live in a file (--token_file), hashed: one token per line,
//
//   <name> <role> sha256:<64 hex digits of SHA-256(token)>
//
// with '#' comments and blank lines allowed. <name> ([A-Za-z0-9._@-], at
// most 64 characters) identifies the caller: it becomes the owner of the
// jobs it submits. <role> is `audit`, `reviewer` or `admin`. A client sends
// `authorization: Bearer <token>` metadata.
//
// Roles, each with everything the one before may do (RequiredRole has the
// table for every RPC):
//   audit     read models, run Spectrum/Sample/EarlyMetrics/Calibrate,
//             submit audits and read or cancel its own jobs;
//   reviewer  also read training items (GetTrainingItems, when the server
//             serves them at all: --serve_training_items);
//   admin     everything, including LoadModel/UnloadModel and any job.
// The health service and reflection are not checked.
//
// Without a token file every caller is an anonymous admin (the service as
// before: bind it to loopback or put it behind a NetworkPolicy).
#ifndef MEMAUDIT_SERVER_ACCESS_CONTROL_H_
#define MEMAUDIT_SERVER_ACCESS_CONTROL_H_

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace memaudit::server {

// In order of what they may do: each role may do what the ones before may.
enum class Role { kAudit, kReviewer, kAdmin };

// "audit" / "reviewer" / "admin".
absl::string_view RoleName(Role role);
// Whether a caller with role `held` may call an RPC that needs `required`.
bool HasRole(Role held, Role required);

// Who is calling.
struct Caller {
  std::string name;  // "" for the anonymous caller of an open server
  Role role = Role::kAdmin;
  // Whether the caller may read or cancel a job submitted by `owner`.
  bool MayAccessJobOf(absl::string_view owner) const;
};

// The role an RPC needs, by its "Service/Method" name (e.g.
// "ModelService/LoadModel"). NOT_FOUND for a method not in the table:
// callers deny it (an RPC added without a role is refused, not opened).
absl::StatusOr<Role> RequiredRole(absl::string_view method);

// SHA-256 of `token`, as 64 lowercase hex digits.
std::string Sha256Hex(absl::string_view token);

// The parsed token file. Thread-safe: Authenticate may run while Reload
// replaces the table.
class TokenStore {
 public:
  // Reads and parses `path`. INVALID_ARGUMENT naming the file and line for
  // a malformed line, an unknown role, a bad hash or a repeated name or
  // hash; NOT_FOUND / PERMISSION_DENIED when it cannot be read;
  // FAILED_PRECONDITION when group or others may write it
  // (CheckOnlyOwnerWritable).
  static absl::StatusOr<std::unique_ptr<TokenStore>> Load(const std::string& path);

  // Re-reads the file. On any error the current tokens stay in force and
  // the error is returned. Returns the number of tokens now in force.
  absl::StatusOr<int> Reload();

  // The caller presenting `authorization` (the metadata value,
  // "Bearer <token>"). UNAUTHENTICATED when it is empty, not a bearer token
  // or not a known token; the message never echoes the token.
  absl::StatusOr<Caller> Authenticate(absl::string_view authorization) const;

  int size() const;

 private:
  struct Entry {
    std::string name;
    Role role;
  };
  using Table = std::map<std::string, Entry>;  // by SHA-256 hex
  explicit TokenStore(std::string path) : path_(std::move(path)) {}
  static absl::StatusOr<Table> Parse(const std::string& path);

  const std::string path_;
  mutable absl::Mutex mu_;
  Table by_hash_ ABSL_GUARDED_BY(mu_);
};

// The check every RPC handler runs first.
class AccessControl {
 public:
  // `tokens` null: an open server (every caller an anonymous admin).
  explicit AccessControl(const TokenStore* tokens) : tokens_(tokens) {}

  // The caller of `method` ("Service/Method") presenting `authorization`
  // (empty when the call has none). UNAUTHENTICATED without a valid token,
  // PERMISSION_DENIED when its role is not enough.
  absl::StatusOr<Caller> Authorize(absl::string_view method, absl::string_view authorization) const;

 private:
  const TokenStore* tokens_;
};

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_ACCESS_CONTROL_H_
