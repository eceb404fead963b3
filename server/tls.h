// TLS material for the gRPC and metrics listeners: PEM files read and
// checked once at start, so that a wrong path, a key that does not match its
// certificate or an expired certificate stops the start with the reason
// instead of failing every handshake later.
#ifndef MEMAUDIT_SERVER_TLS_H_
#define MEMAUDIT_SERVER_TLS_H_

#include <string>

#include "absl/status/statusor.h"

namespace memaudit::server {

struct TlsMaterial {
  std::string certificate_chain;  // PEM: the server certificate first
  std::string private_key;        // PEM
  std::string client_ca;          // PEM, empty: clients are not asked for certificates
};

// Reads and checks the files named by the flags --tls_cert, --tls_key and
// (optional, "" for none) --tls_client_ca. FAILED_PRECONDITION naming the
// flag and the file when one cannot be read or parsed, the key does not
// match the certificate, or the certificate is expired or not yet valid,
// or the key file is writable by group or others (CheckOnlyOwnerWritable).
absl::StatusOr<TlsMaterial> LoadTlsMaterial(const std::string& cert_path,
                                            const std::string& key_path,
                                            const std::string& client_ca_path);

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_TLS_H_
