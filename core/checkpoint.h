// A loaded diffusion checkpoint: config.pbtxt + model.pt (docs/DESIGN.md §4).
//
// Load() validates everything up front (config fields, archive integrity, the
// forward signature and output shape, probed with a tiny batch), so a
// Checkpoint that exists is usable. Forward() is safe to call from several
// threads at once; the object is immutable after Load.
#ifndef MEMAUDIT_CORE_CHECKPOINT_H_
#define MEMAUDIT_CORE_CHECKPOINT_H_

#include <ATen/Tensor.h>
#include <torch/csrc/jit/api/module.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "latent_decoder.h"
#include "memaudit/v1/model_config.pb.h"
#include "schedule.h"
#include "text_encoder.h"

namespace memaudit {

// "cpu", "cuda" or "cuda:N" as a device: INVALID_ARGUMENT for other names,
// FAILED_PRECONDITION when CUDA or that CUDA device is not available.
absl::StatusOr<at::Device> ParseDevice(const std::string& name);

// "float32", "float64", "bfloat16" or "float16" as a compute precision;
// "" is unset (as saved). INVALID_ARGUMENT naming the accepted names.
absl::StatusOr<std::optional<at::ScalarType>> ParseDtype(const std::string& name);
// The name ParseDtype accepts for `dtype` (c10's name for others).
std::string DtypeName(at::ScalarType dtype);

struct CheckpointOptions {
  // "cpu", "cuda" or "cuda:N". CUDA requires a CUDA build of LibTorch.
  std::string device = "cpu";
  // Compute precision of the networks (denoiser, text encoder, decoder);
  // the model's config.pbtxt `dtype` overrides it. Unset (the default): each
  // network runs as saved, parameters and buffers untouched, in the
  // precision of its first floating parameter (or, for a parameter-free
  // module such as an exact mixture, its first floating buffer; float32 when
  // it has neither). Set: the floating parameters and buffers are converted
  // (integer buffers never are). float64 is for exact models whose spectra
  // are verified to high precision; bfloat16 and float16 are for large
  // checkpoints: only the networks run reduced, and Checkpoint::dtype() (the
  // sampling state, Krylov bases, eigen-solves, distances) stays float32.
  std::optional<at::ScalarType> dtype;
  // Called after every network call with the batch rows and whether
  // gradients were being recorded (curvature) or not (sampling). Used for
  // metrics; must be thread-safe and cheap. Not called for the load probe.
  std::function<void(int64_t rows, bool with_gradient)> forward_observer;
};

class Checkpoint {
 public:
  // File names inside a model directory.
  static constexpr const char* kConfigFile = "config.pbtxt";
  static constexpr const char* kModelFile = "model.pt";
  // Optional, EMBEDDING models: the null condition (empty-prompt embedding),
  // a tensor of embedding_shape saved with torch.save / torch::pickle_save.
  // Models with a text encoder use the embedding of "" when it is absent.
  static constexpr const char* kNullConditionFile = "null_condition.pt";
  // Text-to-image models also ship TextEncoder's files (text_encoder.pt and a
  // tokenizer); latent models LatentDecoder's (vae_decoder.pt).

  // Loads `directory`. Errors name the file and the field or problem:
  // NOT_FOUND for a missing directory/file, INVALID_ARGUMENT for a bad config,
  // a corrupt archive, a forward that rejects the contract's arguments or
  // returns the wrong shape; FAILED_PRECONDITION for an unavailable device,
  // or a network that does not run in the reduced precision asked for (e.g.
  // float16 on a CPU whose LibTorch has no float16 kernels for its layers, or
  // a traced archive with float32 baked into its graph), naming the file.
  static absl::StatusOr<std::shared_ptr<const Checkpoint>> Load(
      const std::string& directory, const CheckpointOptions& options = {});

  const v1::ModelConfig& config() const { return config_; }
  const std::string& directory() const { return directory_; }
  const NoiseSchedule& schedule() const { return *schedule_; }
  at::Device device() const { return device_; }
  // The engine's precision: what Forward takes and returns, and what the
  // sampler, the spectrum and the reference distances compute in. float32
  // or float64; float32 when the network runs in bfloat16 or float16.
  at::ScalarType dtype() const { return dtype_; }
  // The denoiser's compute precision (its parameters' dtype).
  at::ScalarType network_dtype() const { return network_dtype_; }
  // d: number of elements per sample.
  int64_t sample_numel() const { return sample_numel_; }
  // {batch, sample_shape...}
  std::vector<int64_t> BatchShape(int64_t batch) const;
  bool conditional() const;
  // The prompt encoder when conditioning.text_encoder is set, else null.
  const TextEncoder* text_encoder() const { return text_encoder_.get(); }
  // The latent decoder when `latent` is set, else null.
  const LatentDecoder* latent_decoder() const { return latent_decoder_.get(); }
  // Undefined for NONE; [batch] labels == num_classes for CLASS_LABEL; for
  // EMBEDDING the stored null embedding (or the empty prompt's) repeated,
  // undefined if there is neither.
  at::Tensor NullCondition(int64_t batch) const;

  // Raw network output for x [B, *sample_shape] (dtype(), on device()),
  // t [B] int64 training-timestep indices and `condition` (undefined for NONE
  // models, [B] int64 labels, or [B, *embedding_shape]), returned in dtype().
  // x and a floating condition are cast to network_dtype() for the call, so
  // with a reduced network the output carries its rounding. Differentiable
  // in x (gradients flow through the casts).
  // Throws c10::Error on failure; callers at API boundaries wrap it.
  at::Tensor Forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& condition) const;

 private:
  Checkpoint() = default;
  // The text encoder and latent decoder the config asks for; refuses their
  // files when the config does not ask for them.
  absl::Status LoadCompanions(const CheckpointOptions& options);
  absl::Status Probe();

  v1::ModelConfig config_;
  std::string directory_;
  std::optional<NoiseSchedule> schedule_;  // set by Load
  at::Device device_ = at::kCPU;
  at::ScalarType dtype_ = at::kFloat;
  at::ScalarType network_dtype_ = at::kFloat;
  int64_t sample_numel_ = 0;
  at::Tensor null_embedding_;
  std::unique_ptr<const TextEncoder> text_encoder_;
  std::unique_ptr<const LatentDecoder> latent_decoder_;
  std::function<void(int64_t, bool)> forward_observer_;
  mutable torch::jit::Module module_;
};

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_CHECKPOINT_H_
