#include "core/checkpoint/load_model.h"

#include <torch/cuda.h>

#include "absl/strings/str_cat.h"
#include "core/checkpoint/checkpoint.h"

namespace memaudit {
namespace {

// The precisions a network may run in (ParseDtype's names).
constexpr at::ScalarType kPrecisions[] = {at::kFloat, at::kDouble, at::kBFloat16, at::kHalf};

}  // namespace

absl::StatusOr<at::Device> ParseDevice(const std::string& name) {
  at::Device device = at::kCPU;
  try {
    device = at::Device(name);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("device \"", name, "\" is not a device name (use cpu, cuda or cuda:N)"));
  }
  if (device.is_cuda()) {
    if (!torch::cuda::is_available()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device ", name, " requested, but this LibTorch build has no usable CUDA device"));
    }
    const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
    if (device.has_index() && device.index() >= count) {
      return absl::FailedPreconditionError(
          absl::StrCat("device ", name, " requested, but only ", count, " CUDA device(s) exist"));
    }
  } else if (!device.is_cpu()) {
    return absl::InvalidArgumentError(absl::StrCat("device ", name, " is not supported"));
  }
  return device;
}

absl::StatusOr<std::optional<at::ScalarType>> ParseDtype(const std::string& name) {
  if (name.empty()) return std::nullopt;
  for (const at::ScalarType dtype : kPrecisions) {
    if (name == DtypeName(dtype)) return dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "dtype \"", name, "\" is not a precision (use float32, float64, bfloat16 or float16)"));
}

std::string DtypeName(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return "float32";
    case at::kDouble:
      return "float64";
    case at::kBFloat16:
      return "bfloat16";
    case at::kHalf:
      return "float16";
    default:
      return c10::toString(dtype);
  }
}

absl::StatusOr<std::shared_ptr<const DiffusionNetwork>> LoadModel(
    const std::string& directory, const CheckpointOptions& options) {
  return Checkpoint::Load(directory, options);
}

}  // namespace memaudit
