// The network as the engine sees it: what the denoiser, the sampler and
// everything above them need of a loaded model (docs/DESIGN.md §4), without
// how it was loaded. Checkpoint (core/checkpoint/checkpoint.h) implements it
// for TorchScript model directories; tests implement it for exact models.
//
// Implementations are immutable after construction and Forward() is safe to
// call from several threads at once.
#ifndef MEMAUDIT_CORE_MODEL_DIFFUSION_NETWORK_H_
#define MEMAUDIT_CORE_MODEL_DIFFUSION_NETWORK_H_

#include <ATen/Tensor.h>

#include <cstdint>
#include <vector>

#include "core/model/schedule.h"
#include "memaudit/v1/model_config.pb.h"

namespace memaudit {

// Companion networks of text-to-image and latent models. Declared only: the
// engine passes them through; code that calls them includes their headers.
class TextEncoder;
class LatentDecoder;

class DiffusionNetwork {
 public:
  // Optional, EMBEDDING models: the null condition (empty-prompt embedding),
  // a tensor of embedding_shape saved with torch.save / torch::pickle_save.
  // Named here because errors about a missing null condition name the file.
  static constexpr const char* kNullConditionFile = "null_condition.pt";

  virtual ~DiffusionNetwork() = default;

  // The validated config.pbtxt.
  virtual const v1::ModelConfig& config() const = 0;
  virtual const NoiseSchedule& schedule() const = 0;
  virtual at::Device device() const = 0;
  // The engine's precision: what Forward takes and returns, and what the
  // sampler, the spectrum and the reference distances compute in. float32
  // or float64; float32 when the network runs in bfloat16 or float16.
  virtual at::ScalarType dtype() const = 0;
  // The network's own compute precision (its parameters' dtype).
  virtual at::ScalarType network_dtype() const = 0;

  // Raw network output for x [B, *sample_shape] (dtype(), on device()),
  // t [B] int64 training-timestep indices and `condition` (undefined for NONE
  // models, [B] int64 labels, or [B, *embedding_shape]), returned in dtype().
  // Differentiable in x. Throws c10::Error on failure; callers at API
  // boundaries wrap it.
  virtual at::Tensor Forward(const at::Tensor& x, const at::Tensor& t,
                             const at::Tensor& condition) const = 0;

  // Undefined for NONE; [batch] labels == num_classes for CLASS_LABEL; for
  // EMBEDDING the null embedding repeated, undefined if the model has none.
  virtual at::Tensor NullCondition(int64_t batch) const = 0;

  // The prompt encoder when conditioning.text_encoder is set, else null.
  virtual const TextEncoder* text_encoder() const { return nullptr; }
  // The latent decoder when `latent` is set, else null.
  virtual const LatentDecoder* latent_decoder() const { return nullptr; }

  // d: number of elements per sample (product of config().sample_shape()).
  int64_t sample_numel() const;
  // {batch, sample_shape...}
  std::vector<int64_t> BatchShape(int64_t batch) const;
  // Whether config() has a conditioning other than NONE.
  bool conditional() const;
};

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_MODEL_DIFFUSION_NETWORK_H_
