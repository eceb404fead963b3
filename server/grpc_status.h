// absl::Status → grpc::Status at the RPC boundary (core/ never sees gRPC).
#ifndef MEMAUDIT_SERVER_GRPC_STATUS_H_
#define MEMAUDIT_SERVER_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace memaudit::server {

// Same code (the numeric values are shared), same message, cut to
// kMaxStatusMessageBytes: messages echo what the caller sent (names, ids),
// and a message larger than gRPC's metadata limit would turn the answer
// into RESOURCE_EXHAUSTED.
inline constexpr size_t kMaxStatusMessageBytes = 2048;
inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  std::string message(status.message());
  if (message.size() > kMaxStatusMessageBytes) {
    const size_t cut = message.size() - kMaxStatusMessageBytes;
    message.resize(kMaxStatusMessageBytes);
    message += "… (" + std::to_string(cut) + " bytes cut)";
  }
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::move(message));
}

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_GRPC_STATUS_H_
