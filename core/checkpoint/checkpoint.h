// A loaded TorchScript model directory: config.pbtxt + model.pt and its
// companions (docs/DESIGN.md §4), the DiffusionNetwork that LoadModel
// (load_model.h) returns. Internal to core/checkpoint/: other code sees the
// interface, so this class can change without rebuilding it.
//
// Load() validates everything up front, so a Checkpoint that exists is
// usable. Forward() is safe to call from several threads at once; the object
// is immutable after Load.
#ifndef MEMAUDIT_CORE_CHECKPOINT_CHECKPOINT_H_
#define MEMAUDIT_CORE_CHECKPOINT_CHECKPOINT_H_

#include <ATen/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/checkpoint/load_model.h"
#include "core/model/diffusion_network.h"
#include "core/model/schedule.h"
#include "memaudit/v1/model_config.pb.h"

namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace memaudit {

class Checkpoint final : public DiffusionNetwork {
 public:
  // Loads `directory`; errors as LoadModel's.
  static absl::StatusOr<std::shared_ptr<const Checkpoint>> Load(
      const std::string& directory, const CheckpointOptions& options = {});

  ~Checkpoint() override;

  const v1::ModelConfig& config() const override { return config_; }
  const std::string& directory() const { return directory_; }
  const NoiseSchedule& schedule() const override { return *schedule_; }
  at::Device device() const override { return device_; }
  at::ScalarType dtype() const override { return dtype_; }
  at::ScalarType network_dtype() const override { return network_dtype_; }
  const TextEncoder* text_encoder() const override { return text_encoder_.get(); }
  const LatentDecoder* latent_decoder() const override { return latent_decoder_.get(); }
  // For EMBEDDING models the stored null embedding, or the empty prompt's.
  at::Tensor NullCondition(int64_t batch) const override;

  // x and a floating condition are cast to network_dtype() for the call, so
  // with a reduced network the output carries its rounding; gradients flow
  // through the casts.
  at::Tensor Forward(const at::Tensor& x, const at::Tensor& t,
                     const at::Tensor& condition) const override;

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
  at::Tensor null_embedding_;
  std::unique_ptr<const TextEncoder> text_encoder_;
  std::unique_ptr<const LatentDecoder> latent_decoder_;
  std::function<void(int64_t, bool)> forward_observer_;
  // The TorchScript denoiser; a pointer so that this header does not bring
  // the JIT's headers to everything that loads a model.
  std::unique_ptr<torch::jit::Module> module_;
};

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_CHECKPOINT_CHECKPOINT_H_
