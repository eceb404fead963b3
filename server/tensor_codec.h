// memaudit.v1.Tensor ↔ at::Tensor.
#ifndef MEMAUDIT_SERVER_TENSOR_CODEC_H_
#define MEMAUDIT_SERVER_TENSOR_CODEC_H_

#include <ATen/Tensor.h>

#include <string>

#include "absl/status/statusor.h"
#include "memaudit/v1/tensor.pb.h"

namespace memaudit::server {

// Dimensions a request's tensor may have: a batch of 3-D samples needs 4.
inline constexpr int kMaxTensorRank = 8;

// Decodes `message` into a CPU tensor. INVALID_ARGUMENT naming `field` when
// the dtype is unspecified, it has more than kMaxTensorRank dimensions, a
// dimension is negative, the non-zero
// dimensions multiply to more than 2^28, the byte count does not match the
// shape, or a float holds NaN/Inf.
absl::StatusOr<at::Tensor> DecodeTensor(const v1::Tensor& message, const std::string& field);

// Encodes `tensor` (float32, float64 or int64; any device) little-endian.
void EncodeTensor(const at::Tensor& tensor, v1::Tensor* message);

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_TENSOR_CODEC_H_
