#include "core/checkpoint/script_module.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/jit/serialization/import.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/runtime/archive_check.h"
#include "core/runtime/tensor_file.h"
#include "core/runtime/torch_runtime.h"

namespace memaudit {
namespace {

at::ScalarType SavedPrecision(const torch::jit::Module& module) {
  for (const at::Tensor& tensor : module.parameters(/*recurse=*/true)) {
    if (tensor.is_floating_point()) return tensor.scalar_type();
  }
  for (const at::Tensor& tensor : module.buffers(/*recurse=*/true)) {
    if (tensor.is_floating_point()) return tensor.scalar_type();
  }
  return at::kFloat;
}

void ConvertFloatingState(torch::jit::Module& module, at::ScalarType dtype) {
  for (at::Tensor tensor : module.parameters(/*recurse=*/true)) {
    if (tensor.is_floating_point() && tensor.scalar_type() != dtype) {
      tensor.set_data(tensor.to(dtype));
    }
  }
  for (at::Tensor tensor : module.buffers(/*recurse=*/true)) {
    if (tensor.is_floating_point() && tensor.scalar_type() != dtype) {
      tensor.set_data(tensor.to(dtype));
    }
  }
}

}  // namespace

absl::StatusOr<ScriptModule> LoadScriptModule(const std::string& path, at::Device device,
                                              std::optional<at::ScalarType> dtype) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": file does not exist"));
  }
  ConfigureTorchKernels();
  RETURN_IF_ERROR(CheckArchive(path));
  ScriptModule loaded;
  try {
    loaded.module = torch::jit::load(path, device);
    // Before anything reads them: each parameter and buffer addresses only
    // its own stored data (an archive's data.pkl states shapes apart from
    // the data; see CheckDenseTensor).
    for (const at::Tensor& tensor : loaded.module.parameters(/*recurse=*/true)) {
      RETURN_IF_ERROR(CheckDenseTensor(tensor, absl::StrCat(path, ": a parameter")));
    }
    for (const at::Tensor& tensor : loaded.module.buffers(/*recurse=*/true)) {
      RETURN_IF_ERROR(CheckDenseTensor(tensor, absl::StrCat(path, ": a buffer")));
    }
    loaded.module.eval();
    if (dtype.has_value()) {
      ConvertFloatingState(loaded.module, *dtype);
      loaded.dtype = *dtype;
    } else {
      loaded.dtype = SavedPrecision(loaded.module);
    }
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInvalidArgument,
                      absl::StrCat(path, ": not a loadable TorchScript archive"), e);
  }
  return loaded;
}

absl::StatusOr<size_t> ForwardArgumentCount(const torch::jit::Module& module,
                                            const std::string& path,
                                            const std::string& expected_signature) {
  auto method = module.find_method("forward");
  if (!method) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": has no forward method; expected ", expected_signature));
  }
  return method->function().getSchema().arguments().size() - 1;  // - self
}

absl::Status CheckForwardArgumentCount(const torch::jit::Module& module, const std::string& path,
                                       size_t expected, const std::string& expected_signature) {
  ASSIGN_OR_RETURN(const size_t arguments, ForwardArgumentCount(module, path, expected_signature));
  if (arguments != expected) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": forward takes ", arguments,
                                                   " argument(s); expected ", expected_signature));
  }
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> ForwardWithShape(torch::jit::Module& module, const at::Tensor& input,
                                            const std::vector<int64_t>& expected_shape,
                                            const std::string& what,
                                            const std::string& shape_meaning) {
  at::Tensor out;
  try {
    c10::NoGradGuard no_grad;
    c10::IValue result = module.forward({input});
    if (!result.isTensor()) {
      return absl::FailedPreconditionError(
          absl::StrCat("forward returned a ", result.tagKind(), ", expected a Tensor"));
    }
    out = result.toTensor();
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInternal, absl::StrCat(what, " failed"), e);
  }
  if (!at::isFloatingType(out.scalar_type())) {
    return absl::FailedPreconditionError("forward returned a non-floating-point tensor");
  }
  if (out.sizes().vec() != expected_shape) {
    return absl::FailedPreconditionError(
        absl::StrCat("forward returned shape ", ShapeString(out.sizes()), ", expected ",
                     ShapeString(expected_shape), " (", shape_meaning, ")"));
  }
  return out;
}

}  // namespace memaudit
