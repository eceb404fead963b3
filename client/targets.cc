#include "client/targets.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace memaudit::client {
namespace {

struct HostPort {
  std::string host;  // without brackets
  std::string port;
  bool bracketed = false;
};

absl::Status BadPart(absl::string_view spec, absl::string_view part, absl::string_view why) {
  if (part == spec) return absl::InvalidArgumentError(absl::StrCat("\"", spec, "\": ", why));
  return absl::InvalidArgumentError(absl::StrCat("\"", part, "\" in \"", spec, "\": ", why));
}

// gRPC target schemes that are not HOST:PORT and go to gRPC as they are.
bool IsOtherGrpcTarget(absl::string_view spec) {
  for (absl::string_view scheme : {"unix:", "unix-abstract:", "vsock:"}) {
    if (absl::StartsWith(spec, scheme)) return true;
  }
  return absl::StrContains(spec, "://");
}

// "HOST:PORT" or "[IPV6]:PORT", the port 1..65535.
absl::StatusOr<HostPort> ParseHostPort(absl::string_view spec, absl::string_view entry) {
  HostPort parsed;
  absl::string_view rest;
  if (absl::StartsWith(entry, "[")) {
    const size_t close = entry.find(']');
    if (close == absl::string_view::npos) return BadPart(spec, entry, "no closing \"]\"");
    parsed.host = std::string(entry.substr(1, close - 1));
    parsed.bracketed = true;
    rest = entry.substr(close + 1);
    if (!absl::StartsWith(rest, ":")) return BadPart(spec, entry, "no port (HOST:PORT)");
    rest.remove_prefix(1);
  } else {
    const size_t colon = entry.rfind(':');
    if (colon == absl::string_view::npos) return BadPart(spec, entry, "no port (HOST:PORT)");
    parsed.host = std::string(entry.substr(0, colon));
    if (parsed.host.find(':') != std::string::npos) {
      return BadPart(spec, entry, "an IPv6 address needs brackets: [ADDRESS]:PORT");
    }
    rest = entry.substr(colon + 1);
  }
  if (parsed.host.empty()) return BadPart(spec, entry, "no host (HOST:PORT)");
  int port = 0;
  if (rest.empty() || !std::all_of(rest.begin(), rest.end(), absl::ascii_isdigit) ||
      !absl::SimpleAtoi(rest, &port) || port < 1 || port > 65535) {
    return BadPart(spec, entry, "the port must be a number in 1..65535");
  }
  parsed.port = std::string(rest);
  return parsed;
}

// The comma-separated entries of `list`, none empty.
absl::StatusOr<std::vector<absl::string_view>> Entries(absl::string_view spec,
                                                       absl::string_view list) {
  std::vector<absl::string_view> entries = absl::StrSplit(list, ',');
  for (size_t i = 0; i < entries.size(); ++i) {
    entries[i] = absl::StripAsciiWhitespace(entries[i]);
    if (entries[i].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("entry ", i + 1, " of \"", spec, "\" is empty"));
    }
  }
  return entries;
}

// The HOST:PORT entries of `list`; with `family` AF_INET or AF_INET6,
// numeric addresses of that family (gRPC's ipv4:/ipv6: syntax), with
// AF_UNSPEC any host.
absl::StatusOr<std::vector<Replica>> List(absl::string_view spec, absl::string_view list,
                                          int family) {
  absl::StatusOr<std::vector<absl::string_view>> entries = Entries(spec, list);
  if (!entries.ok()) return entries.status();
  std::vector<Replica> replicas;
  for (absl::string_view entry : *entries) {
    absl::StatusOr<HostPort> parsed = ParseHostPort(spec, entry);
    if (!parsed.ok()) return parsed.status();
    unsigned char address[sizeof(in6_addr)];
    if (family != AF_UNSPEC && (parsed->bracketed != (family == AF_INET6) ||
                                inet_pton(family, parsed->host.c_str(), address) != 1)) {
      return BadPart(spec, entry,
                     family == AF_INET ? "not a numeric IPv4 address:port"
                                       : "not a numeric IPv6 address in brackets: [ADDRESS]:PORT");
    }
    replicas.push_back({std::string(entry), ""});
  }
  return replicas;
}

// Every address `host_port` resolves to (getaddrinfo), duplicates removed.
absl::StatusOr<std::vector<Replica>> Resolve(absl::string_view spec, absl::string_view host_port) {
  absl::StatusOr<HostPort> parsed = ParseHostPort(spec, host_port);
  if (!parsed.ok()) return parsed.status();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int error = getaddrinfo(parsed->host.c_str(), parsed->port.c_str(), &hints, &found);
  if (error != 0) {
    return absl::UnavailableError(absl::StrCat("cannot resolve \"", parsed->host, "\" in \"", spec,
                                               "\": ", gai_strerror(error)));
  }
  std::vector<Replica> replicas;
  for (const addrinfo* info = found; info != nullptr; info = info->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    const void* address =
        info->ai_family == AF_INET
            ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(info->ai_addr)->sin_addr)
            : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(info->ai_addr)->sin6_addr);
    if ((info->ai_family != AF_INET && info->ai_family != AF_INET6) ||
        inet_ntop(info->ai_family, address, text, sizeof(text)) == nullptr) {
      continue;
    }
    Replica replica{info->ai_family == AF_INET ? absl::StrCat(text, ":", parsed->port)
                                               : absl::StrCat("[", text, "]:", parsed->port),
                    parsed->host};
    if (std::find(replicas.begin(), replicas.end(), replica) == replicas.end()) {
      replicas.push_back(std::move(replica));
    }
  }
  freeaddrinfo(found);
  if (replicas.empty()) {
    return absl::UnavailableError(
        absl::StrCat("\"", parsed->host, "\" in \"", spec, "\" has no IPv4 or IPv6 address"));
  }
  return replicas;
}

// The NAME:PORT of a "dns:" target, or INVALID_ARGUMENT for an authority.
absl::StatusOr<absl::string_view> DnsHostPort(absl::string_view spec) {
  absl::string_view rest = spec.substr(4);
  if (absl::StartsWith(rest, "//")) {
    if (!absl::StartsWith(rest, "///")) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", spec, "\": a DNS authority is not supported; use dns:///NAME:PORT"));
    }
    rest.remove_prefix(3);
  }
  return rest;
}

}  // namespace

namespace {

// ResolveReplicas, resolving a "dns:" name only when `resolve` is set
// (otherwise the target itself, its syntax checked).
absl::StatusOr<std::vector<Replica>> ParseTargets(absl::string_view spec, bool resolve) {
  if (spec.empty()) return absl::InvalidArgumentError("no server address");
  if (absl::StartsWith(spec, "ipv4:")) return List(spec, spec.substr(5), AF_INET);
  if (absl::StartsWith(spec, "ipv6:")) return List(spec, spec.substr(5), AF_INET6);
  if (absl::StartsWith(spec, "dns:")) {
    absl::StatusOr<absl::string_view> host_port = DnsHostPort(spec);
    if (!host_port.ok()) return host_port.status();
    if (resolve) return Resolve(spec, *host_port);
    if (absl::Status status = ParseHostPort(spec, *host_port).status(); !status.ok()) {
      return status;
    }
    return std::vector<Replica>{{std::string(spec), ""}};
  }
  if (spec.find(',') != absl::string_view::npos) return List(spec, spec, AF_UNSPEC);
  // gRPC itself would take "127.0.0.1:99999" and dial the port modulo 65536.
  if (!IsOtherGrpcTarget(spec)) {
    if (absl::Status status = ParseHostPort(spec, spec).status(); !status.ok()) return status;
  }
  return std::vector<Replica>{{std::string(spec), ""}};
}

}  // namespace

absl::StatusOr<std::vector<Replica>> ParseServerAddress(absl::string_view spec) {
  return ParseTargets(spec, /*resolve=*/false);
}

absl::StatusOr<JobRef> ParseJobRef(absl::string_view text) {
  if (text.find(',') != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text,
                     "\" names several jobs (the shards of a fanned-out audit): give one "
                     "ADDRESS/ID at a time"));
  }
  const size_t slash = text.rfind('/');
  JobRef ref;
  ref.id = std::string(slash == absl::string_view::npos ? text : text.substr(slash + 1));
  if (ref.id.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\": no job id (ID or ADDRESS/ID)"));
  }
  if (slash == absl::string_view::npos) return ref;
  ref.address = std::string(text.substr(0, slash));
  // One server: a list needs a comma, refused above.
  if (absl::Status status = ParseServerAddress(ref.address).status(); !status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the address of job \"", text, "\": ", status.message()));
  }
  return ref;
}

absl::StatusOr<std::vector<Replica>> ResolveReplicas(absl::string_view spec) {
  return ParseTargets(spec, /*resolve=*/true);
}

}  // namespace memaudit::client
