#include "server/access_control.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/file_permissions.h"

namespace memaudit::server {
namespace {

constexpr size_t kMaxNameLength = 64;
constexpr size_t kMaxTokenFileBytes = size_t{1} << 20;
constexpr absl::string_view kHashPrefix = "sha256:";

struct MethodRole {
  absl::string_view method;
  Role role;
};

// Every RPC of memaudit.v1 and the role it needs. Ownership of jobs is
// checked by the handlers (Caller::MayAccessJobOf).
constexpr MethodRole kMethodRoles[] = {
    {"ModelService/ListModels", Role::kAudit},
    {"ModelService/GetModel", Role::kAudit},
    {"ModelService/LoadModel", Role::kAdmin},
    {"ModelService/UnloadModel", Role::kAdmin},
    {"ModelService/GetTrainingItems", Role::kReviewer},
    {"AuditService/Spectrum", Role::kAudit},
    {"AuditService/Sample", Role::kAudit},
    {"AuditService/StreamSamples", Role::kAudit},
    {"AuditService/EarlyMetrics", Role::kAudit},
    {"AuditService/Mitigate", Role::kAudit},
    {"AuditService/Calibrate", Role::kAudit},
    {"AuditService/SubmitAudit", Role::kAudit},
    {"AuditService/WatchAudit", Role::kAudit},
    {"AuditService/GetAudit", Role::kAudit},
    {"AuditService/ListAudits", Role::kAudit},
    {"AuditService/CancelAudit", Role::kAudit},
};

bool IsNameCharacter(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' ||
         c == '@';
}

bool IsLowerHex(absl::string_view text) {
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kAudit:
      return "audit";
    case Role::kReviewer:
      return "reviewer";
    case Role::kAdmin:
      return "admin";
  }
  return "unknown";
}

bool HasRole(Role held, Role required) {
  return static_cast<int>(held) >= static_cast<int>(required);
}

bool Caller::MayAccessJobOf(absl::string_view owner) const {
  return role == Role::kAdmin || owner == name;
}

absl::StatusOr<Role> RequiredRole(absl::string_view method) {
  for (const MethodRole& entry : kMethodRoles) {
    if (entry.method == method) return entry.role;
  }
  return absl::NotFoundError(absl::StrCat("no role is defined for method ", method));
}

std::string Sha256Hex(absl::string_view token) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(token.data(), token.size(), digest, &length, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * length);
  for (unsigned int i = 0; i < length; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 15]);
  }
  return hex;
}

absl::StatusOr<TokenStore::Table> TokenStore::Parse(const std::string& path) {
  if (absl::Status status = CheckOnlyOwnerWritable("token file", path); !status.ok()) {
    return status;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int error = errno;
    const std::string reason = std::strerror(error);
    const std::string message = absl::StrCat("token file \"", path, "\": cannot read: ", reason);
    return error == EACCES ? absl::PermissionDeniedError(message) : absl::NotFoundError(message);
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  if (contents.str().size() > kMaxTokenFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file \"", path, "\": larger than ", kMaxTokenFileBytes, " bytes"));
  }
  Table table;
  std::set<std::string> names;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(contents.str(), '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    auto error = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat("token file \"", path, "\" line ", line_number, ": ", what,
                       " (expected \"<name> <audit|admin> sha256:<64 hex digits>\")"));
    };
    const std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() != 3) return error(absl::StrCat(fields.size(), " fields, not 3"));
    const absl::string_view name = fields[0];
    if (name.size() > kMaxNameLength || !std::all_of(name.begin(), name.end(), IsNameCharacter)) {
      return error("the name must be 1-64 characters of A-Z a-z 0-9 . _ @ -");
    }
    Role role;
    if (fields[1] == "audit") {
      role = Role::kAudit;
    } else if (fields[1] == "reviewer") {
      role = Role::kReviewer;
    } else if (fields[1] == "admin") {
      role = Role::kAdmin;
    } else {
      return error(absl::StrCat("unknown role \"", fields[1], "\" (audit, reviewer or admin)"));
    }
    absl::string_view hash = fields[2];
    if (!absl::ConsumePrefix(&hash, kHashPrefix) || hash.size() != 64 || !IsLowerHex(hash)) {
      return error("the hash is not sha256: followed by 64 lowercase hex digits");
    }
    if (!names.insert(std::string(name)).second) {
      return error(absl::StrCat("the name \"", name, "\" appears twice"));
    }
    if (!table.emplace(std::string(hash), Entry{std::string(name), role}).second) {
      return error("the same token hash appears twice");
    }
  }
  return table;
}

absl::StatusOr<std::unique_ptr<TokenStore>> TokenStore::Load(const std::string& path) {
  std::unique_ptr<TokenStore> store(new TokenStore(path));
  auto table = Parse(path);
  if (!table.ok()) return table.status();
  absl::MutexLock lock(&store->mu_);
  store->by_hash_ = *std::move(table);
  return store;
}

absl::StatusOr<int> TokenStore::Reload() {
  auto table = Parse(path_);
  if (!table.ok()) return table.status();
  absl::MutexLock lock(&mu_);
  by_hash_ = *std::move(table);
  return static_cast<int>(by_hash_.size());
}

int TokenStore::size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(by_hash_.size());
}

absl::StatusOr<Caller> TokenStore::Authenticate(absl::string_view authorization) const {
  if (authorization.empty()) {
    return absl::UnauthenticatedError(
        "this server requires a token: send \"authorization: Bearer <token>\" metadata "
        "(memaudit --token-file)");
  }
  absl::string_view token = absl::StripAsciiWhitespace(authorization);
  constexpr absl::string_view kScheme = "bearer ";
  if (token.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(token.substr(0, kScheme.size()), kScheme)) {
    return absl::UnauthenticatedError("the authorization metadata is not \"Bearer <token>\"");
  }
  token = absl::StripLeadingAsciiWhitespace(token.substr(kScheme.size()));
  // Looked up by hash: the comparison never touches the secret itself.
  const std::string hash = Sha256Hex(token);
  absl::MutexLock lock(&mu_);
  auto entry = by_hash_.find(hash);
  if (entry == by_hash_.end()) return absl::UnauthenticatedError("the token is not known");
  return Caller{entry->second.name, entry->second.role};
}

absl::StatusOr<Caller> AccessControl::Authorize(absl::string_view method,
                                                absl::string_view authorization) const {
  auto required = RequiredRole(method);
  if (!required.ok()) return absl::PermissionDeniedError(required.status().message());
  if (tokens_ == nullptr) return Caller{"", Role::kAdmin};
  auto caller = tokens_->Authenticate(authorization);
  if (!caller.ok()) return caller.status();
  if (!HasRole(caller->role, *required)) {
    return absl::PermissionDeniedError(absl::StrCat(method, " needs the ", RoleName(*required),
                                                    " role; \"", caller->name, "\" has the ",
                                                    RoleName(caller->role), " role"));
  }
  return caller;
}

}  // namespace memaudit::server
