// Loading the TorchScript archives of a model directory (model.pt,
// text_encoder.pt, vae_decoder.pt) the same way: onto one device, in one
// precision, with errors that name the file.
#ifndef MEMAUDIT_CORE_CHECKPOINT_SCRIPT_MODULE_H_
#define MEMAUDIT_CORE_CHECKPOINT_SCRIPT_MODULE_H_

#include <ATen/Tensor.h>
#include <torch/csrc/jit/api/module.h>

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/shape_string.h"

namespace memaudit {

struct ScriptModule {
  torch::jit::Module module;  // in eval mode
  // The precision the module computes in: `dtype` when one was requested,
  // else its first floating parameter's, else its first floating buffer's
  // (parameter-free exact models), else float32.
  at::ScalarType dtype = at::kFloat;
};

// Loads the archive at `path` onto `device`. With `dtype` set, floating
// parameters and buffers are converted to it; integer buffers (index
// tables, class ids, token ids) are never touched, which Module::to(dtype)
// would break. NOT_FOUND when the file does not exist; INVALID_ARGUMENT
// naming the file when it is not a loadable archive.
absl::StatusOr<ScriptModule> LoadScriptModule(const std::string& path, at::Device device,
                                              std::optional<at::ScalarType> dtype);

// The number of arguments of the module's forward, self excluded.
// INVALID_ARGUMENT naming `path` and `expected_signature` when the module
// has no forward method.
absl::StatusOr<size_t> ForwardArgumentCount(const torch::jit::Module& module,
                                            const std::string& path,
                                            const std::string& expected_signature);

// OK when forward takes exactly `expected` arguments; else INVALID_ARGUMENT
// "<path>: forward takes N argument(s); expected <expected_signature>".
absl::Status CheckForwardArgumentCount(const torch::jit::Module& module, const std::string& path,
                                       size_t expected, const std::string& expected_signature);

// Runs module.forward(`input`) without recording gradients and checks that
// it returned a floating tensor of `expected_shape`. INTERNAL, prefixed by
// `what` (e.g. "the text encoder"), when the module throws;
// FAILED_PRECONDITION "forward returned ..." for another value (the
// model's fault, not the caller's), with `shape_meaning` (e.g. "batch,
// latent.image_shape") after the expected shape.
absl::StatusOr<at::Tensor> ForwardWithShape(torch::jit::Module& module, const at::Tensor& input,
                                            const std::vector<int64_t>& expected_shape,
                                            const std::string& what,
                                            const std::string& shape_meaning);

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_CHECKPOINT_SCRIPT_MODULE_H_
