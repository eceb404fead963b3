// absl::Status → grpc::Status at the RPC boundary (core/ never sees gRPC).
#ifndef MEMAUDIT_SERVER_GRPC_STATUS_H_
#define MEMAUDIT_SERVER_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace memaudit::server {

// Same code (the numeric values are shared), same message.
inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_GRPC_STATUS_H_
