#include "core/checkpoint/checkpoint.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/base/status_macros.h"
#include "core/checkpoint/latent_decoder.h"
#include "core/checkpoint/model_config.h"
#include "core/checkpoint/script_module.h"
#include "core/checkpoint/text_encoder.h"
#include "core/runtime/tensor_file.h"
#include "core/runtime/torch_runtime.h"

namespace memaudit {
namespace {

namespace fs = std::filesystem;

// A precision a network may run in: one ParseDtype accepts.
bool IsEngineOrReducedPrecision(at::ScalarType dtype) {
  const absl::StatusOr<std::optional<at::ScalarType>> parsed = ParseDtype(DtypeName(dtype));
  return parsed.ok() && parsed->has_value();
}

// What the engine computes in around a network of `network` precision:
// the network's own when it is float32/float64, else float32 (Krylov
// recurrences and eigen-solves lose their accuracy at 8 bits of mantissa).
at::ScalarType EnginePrecision(at::ScalarType network) {
  return network == at::kDouble ? at::kDouble : at::kFloat;
}

// The argument names the contract expects, for error messages.
std::string ExpectedSignature(const v1::ModelConfig& config) {
  switch (config.conditioning().kind()) {
    case v1::Conditioning::CLASS_LABEL:
      return "forward(x: Tensor, t: Tensor, y: Tensor)";
    case v1::Conditioning::EMBEDDING:
      return "forward(x: Tensor, t: Tensor, c: Tensor)";
    default:
      return "forward(x: Tensor, t: Tensor)";
  }
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Checkpoint>> Checkpoint::Load(
    const std::string& directory, const CheckpointOptions& options) {
  ConfigureTorchKernels();
  std::error_code ec;
  if (!fs::is_directory(directory, ec)) {
    return absl::NotFoundError(absl::StrCat(directory, ": model directory does not exist"));
  }
  if (options.dtype.has_value() && !IsEngineOrReducedPrecision(*options.dtype)) {
    return absl::InvalidArgumentError("dtype must be float32, float64, bfloat16 or float16");
  }
  std::shared_ptr<Checkpoint> checkpoint(new Checkpoint());
  checkpoint->directory_ = directory;
  ASSIGN_OR_RETURN(checkpoint->device_, ParseDevice(options.device));

  const std::string config_path = (fs::path(directory) / kModelConfigFile).string();
  ASSIGN_OR_RETURN(v1::ModelConfig config, LoadModelConfig(config_path));
  const std::string dir_name = fs::path(directory).lexically_normal().filename().string();
  const std::string base_name =
      dir_name.empty() ? fs::path(directory).lexically_normal().parent_path().filename().string()
                       : dir_name;
  if (config.name() != base_name) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": name: \"", config.name(),
                                                   "\" must equal the directory name \"", base_name,
                                                   "\""));
  }
  // config.pbtxt's dtype (validated) overrides the server's.
  CheckpointOptions resolved = options;
  if (!config.dtype().empty()) resolved.dtype = *ParseDtype(config.dtype());
  checkpoint->config_ = std::move(config);
  checkpoint->schedule_ = *NoiseSchedule::Create(checkpoint->config_.noise_schedule());

  const std::string model_path = (fs::path(directory) / kModelNetworkFile).string();
  ASSIGN_OR_RETURN(ScriptModule loaded,
                   LoadScriptModule(model_path, checkpoint->device_, resolved.dtype));
  checkpoint->module_ = std::make_unique<torch::jit::Module>(std::move(loaded.module));
  checkpoint->network_dtype_ = loaded.dtype;
  checkpoint->dtype_ = EnginePrecision(loaded.dtype);
  RETURN_IF_ERROR(checkpoint->LoadCompanions(resolved));

  if (checkpoint->config_.conditioning().kind() == v1::Conditioning::EMBEDDING) {
    const std::string null_path = (fs::path(directory) / kNullConditionFile).string();
    if (fs::exists(null_path, ec)) {
      ASSIGN_OR_RETURN(const at::Tensor null_embedding, LoadTensorFile(null_path));
      std::vector<int64_t> expected(checkpoint->config_.conditioning().embedding_shape().begin(),
                                    checkpoint->config_.conditioning().embedding_shape().end());
      if (null_embedding.sizes().vec() != expected) {
        return absl::InvalidArgumentError(
            absl::StrCat(null_path, ": shape ", ShapeString(null_embedding.sizes()),
                         " does not match conditioning.embedding_shape ", ShapeString(expected)));
      }
      // Checked here, not blamed on the network when guidance first mixes
      // it in.
      if (!at::isFloatingType(null_embedding.scalar_type()) ||
          !at::isfinite(null_embedding).all().item<bool>()) {
        return absl::InvalidArgumentError(
            absl::StrCat(null_path, ": must hold finite floating-point values"));
      }
      checkpoint->null_embedding_ =
          null_embedding.to(checkpoint->device_, checkpoint->dtype_).unsqueeze(0);
    } else if (checkpoint->text_encoder_) {
      // The empty prompt stands for the null condition, as in classifier-free
      // guidance training (the caption dropped to "").
      checkpoint->null_embedding_ = checkpoint->text_encoder_->empty_prompt_embedding();
    }
  }
  RETURN_IF_ERROR(checkpoint->Probe());
  checkpoint->forward_observer_ = options.forward_observer;
  return std::shared_ptr<const Checkpoint>(std::move(checkpoint));
}

absl::Status Checkpoint::LoadCompanions(const CheckpointOptions& options) {
  std::error_code ec;
  const fs::path dir(directory_);
  if (config_.conditioning().has_text_encoder()) {
    ASSIGN_OR_RETURN(text_encoder_,
                     TextEncoder::Load(directory_, config_, device_, options.dtype, dtype_));
  } else if (fs::exists(dir / TextEncoder::kModelFile, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(
        (dir / kModelConfigFile).string(), ": the directory has ", TextEncoder::kModelFile,
        " but conditioning.text_encoder is not set; add `text_encoder { max_length: L }` to "
        "conditioning (docs/TEXT_TO_IMAGE.md)"));
  }
  if (config_.has_latent()) {
    ASSIGN_OR_RETURN(latent_decoder_,
                     LatentDecoder::Load(directory_, config_, device_, options.dtype));
  } else if (fs::exists(dir / LatentDecoder::kModelFile, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(
        (dir / kModelConfigFile).string(), ": the directory has ", LatentDecoder::kModelFile,
        " but `latent` is not set; add `latent { scaling_factor: F image_shape: [C, H, W] }`"));
  }
  return absl::OkStatus();
}

absl::Status Checkpoint::Probe() {
  const std::string model_path = (fs::path(directory_) / kModelNetworkFile).string();
  ASSIGN_OR_RETURN(const size_t actual_args,
                   ForwardArgumentCount(*module_, model_path, ExpectedSignature(config_)));
  const size_t expected_args = conditional() ? 3 : 2;
  if (actual_args != expected_args) {
    return absl::InvalidArgumentError(absl::StrCat(
        model_path, ": forward takes ", actual_args, " argument(s) but conditioning.kind ",
        v1::Conditioning::Kind_Name(config_.conditioning().kind()), " needs ",
        ExpectedSignature(config_)));
  }
  // Two rows: the first and last training timestep, conditional and null.
  constexpr int64_t kProbeBatch = 2;
  const auto options = at::TensorOptions().device(device_);
  at::Tensor x = at::zeros(BatchShape(kProbeBatch), options.dtype(dtype_));
  at::Tensor t =
      at::tensor({int64_t{0}, schedule_->num_train_timesteps() - 1}, options.dtype(at::kLong));
  at::Tensor condition;
  switch (config_.conditioning().kind()) {
    case v1::Conditioning::CLASS_LABEL:
      condition =
          at::tensor({int64_t{0}, config_.conditioning().num_classes()}, options.dtype(at::kLong));
      break;
    case v1::Conditioning::EMBEDDING: {
      std::vector<int64_t> shape{kProbeBatch};
      shape.insert(shape.end(), config_.conditioning().embedding_shape().begin(),
                   config_.conditioning().embedding_shape().end());
      condition = at::zeros(shape, options.dtype(dtype_));
      break;
    }
    default:
      break;
  }
  at::Tensor out;
  try {
    c10::NoGradGuard no_grad;
    out = Forward(x, t, condition);
  } catch (const std::exception& e) {
    if (network_dtype_ != dtype_) {
      // The archive loads but does not run reduced: a fault of this
      // platform or export, not of the caller's request.
      return TorchError(
          absl::StatusCode::kFailedPrecondition,
          absl::StrCat(model_path, ": does not run in ", DtypeName(network_dtype_), " on ",
                       device_.str(),
                       network_dtype_ == at::kHalf && device_.is_cpu()
                           ? " (this LibTorch lacks float16 CPU kernels for its layers: use "
                             "bfloat16 on the CPU, float16 on a CUDA device)"
                           : " (a traced archive can bake float32 into its graph: export it in "
                             "the reduced precision, or load it in float32)"),
          e);
    }
    return TorchError(absl::StatusCode::kInvalidArgument,
                      absl::StrCat(model_path, ": probe call ", ExpectedSignature(config_),
                                   " with x of shape ", ShapeString(x.sizes()), " failed"),
                      e);
  }
  if (!out.defined() || out.sizes() != x.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat(
        model_path, ": forward returned shape ",
        out.defined() ? ShapeString(out.sizes()) : "<undefined>", ", expected the input shape ",
        ShapeString(x.sizes()), " (sample_shape ", ShapeString(config_.sample_shape()), ")"));
  }
  if (!at::isFloatingType(out.scalar_type())) {
    return absl::InvalidArgumentError(
        absl::StrCat(model_path, ": forward returned a non-floating-point tensor"));
  }
  if (!at::isfinite(out).all().item<bool>()) {
    return absl::InvalidArgumentError(
        absl::StrCat(model_path, ": forward returned non-finite values on the probe batch"));
  }
  return absl::OkStatus();
}

Checkpoint::~Checkpoint() = default;

at::Tensor Checkpoint::NullCondition(int64_t batch) const {
  switch (config_.conditioning().kind()) {
    case v1::Conditioning::CLASS_LABEL:
      return at::full({batch}, config_.conditioning().num_classes(),
                      at::TensorOptions().dtype(at::kLong).device(device_));
    case v1::Conditioning::EMBEDDING:
      if (!null_embedding_.defined()) return {};
      {
        std::vector<int64_t> shape = null_embedding_.sizes().vec();
        shape[0] = batch;
        return null_embedding_.expand(shape).contiguous();
      }
    default:
      return {};
  }
}

at::Tensor Checkpoint::Forward(const at::Tensor& x, const at::Tensor& t,
                               const at::Tensor& condition) const {
  std::vector<c10::IValue> inputs{x.scalar_type() == network_dtype_ ? x : x.to(network_dtype_), t};
  if (conditional()) {
    inputs.emplace_back(condition.defined() && condition.is_floating_point() &&
                                condition.scalar_type() != network_dtype_
                            ? condition.to(network_dtype_)
                            : condition);
  }
  at::Tensor out = module_->forward(std::move(inputs)).toTensor();
  if (forward_observer_) forward_observer_(x.size(0), c10::GradMode::is_enabled());
  // Only a floating output is brought to the model's precision: an integer
  // one stays as it is, so that the load probe can refuse it.
  if (out.scalar_type() == dtype_ || !at::isFloatingType(out.scalar_type())) return out;
  return out.to(dtype_);
}

}  // namespace memaudit
