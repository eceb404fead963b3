// memaudit.v1.Tensor bytes → DecodeTensor. Any message must give a Status
// (no exception); a tensor that decodes must match the message's dtype,
// shape and bytes, and EncodeTensor must give the message back (less
// unknown fields).
#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/strings/match.h"
#include "fuzz/fuzz_check.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/tensor_codec.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  QuietProtobufLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  memaudit::v1::Tensor message;
  if (!message.ParseFromArray(data, static_cast<int>(size))) return 0;
  absl::StatusOr<at::Tensor> tensor = memaudit::server::DecodeTensor(message, "x");
  FUZZ_LOG_STATUS(tensor.status());
  if (!tensor.ok()) {
    FUZZ_CHECK(tensor.status().code() == absl::StatusCode::kInvalidArgument, "%s",
               tensor.status().ToString().c_str());
    FUZZ_CHECK(absl::StartsWith(tensor.status().message(), "x."), "%s",
               tensor.status().ToString().c_str());
    return 0;
  }
  FUZZ_CHECK(tensor->device().is_cpu() && tensor->is_contiguous(), "not a contiguous CPU tensor");
  const std::vector<int64_t> shape(message.shape().begin(), message.shape().end());
  FUZZ_CHECK(tensor->sizes().vec() == shape, "shape differs");
  FUZZ_CHECK(static_cast<size_t>(tensor->numel()) * tensor->element_size() == message.data().size(),
             "%zu bytes for %lld elements", message.data().size(),
             static_cast<long long>(tensor->numel()));
  message.DiscardUnknownFields();  // EncodeTensor writes only known ones
  memaudit::v1::Tensor encoded;
  memaudit::server::EncodeTensor(*tensor, &encoded);
  FUZZ_CHECK(google::protobuf::util::MessageDifferencer::Equals(message, encoded),
             "EncodeTensor(DecodeTensor(m)) != m");
  return 0;
}
