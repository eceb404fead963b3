// Writing model directories (docs/DESIGN.md §4) from C++-built TorchScript modules.
#ifndef MEMAUDIT_TOOLS_TOY_MODEL_DIRECTORY_H_
#define MEMAUDIT_TOOLS_TOY_MODEL_DIRECTORY_H_

#include <torch/csrc/jit/api/module.h>

#include <string>

#include "absl/status/status.h"
#include "core/verdict/reference_set.h"
#include "memaudit/v1/model_config.pb.h"

namespace memaudit::toy {

// Creates <repository>/<config.name()>/ with config.pbtxt, model.pt and, if
// `reference` is non-null, reference.pt. Overwrites existing files. The
// config is validated first.
absl::Status WriteModelDirectory(const std::string& repository, const v1::ModelConfig& config,
                                 const torch::jit::Module& module,
                                 const ReferenceSet* reference = nullptr);

// Parses "linear" | "scaled_linear" | "cosine" and
// "epsilon" | "v_prediction" | "sample" | "score".
absl::StatusOr<v1::NoiseSchedule::Kind> ParseScheduleKind(const std::string& name);
absl::StatusOr<v1::PredictionType> ParsePredictionType(const std::string& name);

// A schedule config with the conventional betas for `kind`: DDPM's
// 1e-4…0.02 for LINEAR, Stable Diffusion's 0.00085…0.012 for SCALED_LINEAR.
v1::NoiseSchedule DefaultSchedule(v1::NoiseSchedule::Kind kind, int64_t num_train_timesteps = 1000);

}  // namespace memaudit::toy

#endif  // MEMAUDIT_TOOLS_TOY_MODEL_DIRECTORY_H_
