#include "server/tensor_codec.h"

#include <ATen/ATen.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace memaudit::server {
namespace {
constexpr int64_t kMaxElements = int64_t{1} << 28;
}  // namespace

absl::StatusOr<at::Tensor> DecodeTensor(const v1::Tensor& message, const std::string& field) {
  at::ScalarType type;
  switch (message.dtype()) {
    case v1::FLOAT32:
      type = at::kFloat;
      break;
    case v1::FLOAT64:
      type = at::kDouble;
      break;
    case v1::INT64:
      type = at::kLong;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".dtype: must be FLOAT32, FLOAT64 or INT64"));
  }
  // The product of the non-zero dimensions stays at most 2^28 (checked
  // before each multiplication, so it cannot overflow): it bounds the
  // element count and every stride, also of a tensor with no elements.
  // The rank first: dimensions of size 1 cost nothing to send and pass the
  // element bound, but a million of them pin a thread in LibTorch's
  // iterators for minutes (and would be joined into the errors below).
  if (message.shape_size() > kMaxTensorRank) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".shape: ", message.shape_size(),
                                                   " dimensions, at most ", kMaxTensorRank));
  }
  int64_t extent = 1;
  bool empty = false;
  std::vector<int64_t> shape(message.shape().begin(), message.shape().end());
  for (int64_t dim : shape) {
    if (dim < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".shape: negative dimension in [", absl::StrJoin(shape, ", "), "]"));
    }
    if (dim == 0) {
      empty = true;
      continue;
    }
    if (dim > kMaxElements / extent) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".shape: [", absl::StrJoin(shape, ", "),
                       "] is too large: its non-zero dimensions multiply to more than 2^28"));
    }
    extent *= dim;
  }
  const int64_t elements = empty ? 0 : extent;
  const size_t expected_bytes = static_cast<size_t>(elements) * at::elementSize(type);
  if (message.data().size() != expected_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ".data: ", message.data().size(), " bytes, but shape [", absl::StrJoin(shape, ", "),
        "] of ", v1::DType_Name(message.dtype()), " needs ", expected_bytes));
  }
  at::Tensor tensor = at::empty(shape, at::TensorOptions().dtype(type));
  if (expected_bytes > 0) std::memcpy(tensor.data_ptr(), message.data().data(), expected_bytes);
  if (at::isFloatingType(type) && !at::isfinite(tensor).all().item<bool>()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".data: holds NaN or Inf"));
  }
  return tensor;
}

void EncodeTensor(const at::Tensor& tensor, v1::Tensor* message) {
  at::Tensor cpu = tensor.detach().to(at::kCPU).contiguous();
  message->Clear();
  for (int64_t dim : cpu.sizes()) message->add_shape(dim);
  switch (cpu.scalar_type()) {
    case at::kDouble:
      message->set_dtype(v1::FLOAT64);
      break;
    case at::kLong:
      message->set_dtype(v1::INT64);
      break;
    default:
      cpu = cpu.to(at::kFloat);
      message->set_dtype(v1::FLOAT32);
      break;
  }
  message->set_data(cpu.data_ptr(), cpu.numel() * cpu.element_size());
}

}  // namespace memaudit::server
