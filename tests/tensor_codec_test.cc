// memaudit.v1.Tensor ↔ at::Tensor: what decodes, and every refusal an
// INVALID_ARGUMENT naming the field (found by fuzz/fuzz_tensor_codec.cc).
#include "server/tensor_codec.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "absl/strings/match.h"

namespace memaudit::server {
namespace {

v1::Tensor Message(std::vector<int64_t> shape, v1::DType dtype, size_t bytes = 0) {
  v1::Tensor message;
  for (int64_t dim : shape) message.add_shape(dim);
  message.set_dtype(dtype);
  message.set_data(std::string(bytes, '\0'));
  return message;
}

TEST(TensorCodecTest, DecodesWhatEncodeTensorWrites) {
  for (const at::Tensor& tensor :
       {at::arange(6, at::kFloat).reshape({2, 3}), at::full({1}, -0.5, at::kDouble),
        at::arange(4, at::kLong), at::zeros({0, 3}, at::kFloat),
        at::scalar_tensor(2.0, at::kDouble)}) {
    v1::Tensor message;
    EncodeTensor(tensor, &message);
    auto decoded = DecodeTensor(message, "x");
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->scalar_type(), tensor.scalar_type());
    EXPECT_TRUE(at::equal(*decoded, tensor)) << tensor;
  }
}

// A shape whose element count overflows int64 is refused for its shape.
// The count used to be multiplied out before the check (signed overflow,
// undefined behaviour): wrapped, 383 × (2^57 − 1) reached the byte check,
// and [2, 2^62] needed 0 bytes and made LibTorch throw.
TEST(TensorCodecTest, AShapeThatOverflowsIsRefusedForItsShape) {
  const int64_t max = std::numeric_limits<int64_t>::max();
  for (const std::vector<int64_t>& shape :
       std::vector<std::vector<int64_t>>{{383, (int64_t{1} << 57) - 1},
                                         {2, int64_t{1} << 62},
                                         {max, max},
                                         {1 << 20, 1 << 20},
                                         {int64_t{1} << 28, 2}}) {
    auto decoded = DecodeTensor(Message(shape, v1::FLOAT32), "x");
    ASSERT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument) << shape[0];
    EXPECT_TRUE(absl::StartsWith(decoded.status().message(), "x.shape: ")) << decoded.status();
  }
}

// An empty tensor is no way around the bound: its other dimensions still
// set its strides.
TEST(TensorCodecTest, HugeDimensionsOfAnEmptyTensorAreRefused) {
  auto decoded = DecodeTensor(Message({0, int64_t{1} << 62, int64_t{1} << 62}, v1::FLOAT64), "x");
  ASSERT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(decoded.status().message(), "x.shape: ")) << decoded.status();
  auto empty = DecodeTensor(Message({int64_t{1} << 28, 0}, v1::FLOAT64), "x");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->numel(), 0);
}

// A million dimensions of size 1 are a 1 MB message that passes the element
// bound; it pinned a planning thread in LibTorch for minutes. The rank is
// refused first, at once; the largest allowed rank still decodes.
TEST(TensorCodecTest, TooManyDimensionsAreRefusedBeforeAnyWork) {
  auto decoded =
      DecodeTensor(Message(std::vector<int64_t>(1'000'000, 1), v1::FLOAT32, sizeof(float)), "x");
  ASSERT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(decoded.status().message(), "x.shape: 1000000 dimensions, at most 8");
  auto widest = DecodeTensor(Message(std::vector<int64_t>(kMaxTensorRank, 2), v1::FLOAT32,
                                     (size_t{1} << kMaxTensorRank) * sizeof(float)),
                             "x");
  ASSERT_TRUE(widest.ok()) << widest.status();
  EXPECT_EQ(widest->dim(), kMaxTensorRank);
}

TEST(TensorCodecTest, RefusalsNameTheField) {
  auto check = [](const v1::Tensor& message, const std::string& part) {
    auto decoded = DecodeTensor(message, "condition.embedding");
    ASSERT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StartsWith(decoded.status().message(), "condition.embedding." + part))
        << decoded.status();
  };
  check(Message({2}, v1::DTYPE_UNSPECIFIED, 8), "dtype");
  check(Message({-1, 2}, v1::FLOAT32), "shape");
  check(Message({3}, v1::FLOAT64, 16), "data");
  v1::Tensor nan;
  EncodeTensor(at::full({2}, std::numeric_limits<double>::quiet_NaN(), at::kDouble), &nan);
  check(nan, "data");
}

}  // namespace
}  // namespace memaudit::server
