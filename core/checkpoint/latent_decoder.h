// A latent diffusion model's decoder (docs/TEXT_TO_IMAGE.md §2):
// vae_decoder.pt turning sampled latents into images, for PNG output and
// for nearest-neighbour truth against a reference set of images.
//
// Thread-safety: immutable after Load; Decode may be called from several
// threads at once.
#ifndef MEMAUDIT_CORE_CHECKPOINT_LATENT_DECODER_H_
#define MEMAUDIT_CORE_CHECKPOINT_LATENT_DECODER_H_

#include <ATen/Tensor.h>
#include <torch/csrc/jit/api/module.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "memaudit/v1/model_config.pb.h"

namespace memaudit {

class LatentDecoder {
 public:
  static constexpr const char* kModelFile = "vae_decoder.pt";
  // Latents per network call in Decode: one, because a VAE decoder's
  // activations at image resolution are its largest (several GB for one
  // 512×512 image in float32) and batching saves little next to sampling.
  static constexpr int64_t kDecodeBatch = 1;

  // Loads vae_decoder.pt from `directory` for `config` (validated; `latent`
  // set), onto `device`, converting it to `dtype` when given, and probes it
  // with one zero latent. NOT_FOUND naming the file when it is missing;
  // INVALID_ARGUMENT naming the file when forward does not take one
  // argument, fails on the probe, or returns anything but a finite floating
  // tensor of [1, *latent.image_shape].
  static absl::StatusOr<std::unique_ptr<const LatentDecoder>> Load(
      const std::string& directory, const v1::ModelConfig& config, at::Device device,
      std::optional<at::ScalarType> dtype);

  // Images [B, *image_shape], float32 on the CPU, values as the decoder
  // returns them (nominally [-1, 1]), of latents [B, *sample_shape] (any
  // device and floating precision): each latent is divided by
  // latent.scaling_factor and decoded kDecodeBatch at a time, without
  // gradients. INVALID_ARGUMENT for a latent of the wrong shape; INTERNAL
  // when the network throws, FAILED_PRECONDITION when it returns the wrong
  // shape or non-finite values (the model's fault), both naming
  // vae_decoder.pt.
  absl::StatusOr<at::Tensor> Decode(const at::Tensor& latents) const;

  const std::vector<int64_t>& image_shape() const { return image_shape_; }

 private:
  LatentDecoder() = default;
  absl::StatusOr<at::Tensor> DecodeBatch(const at::Tensor& latents) const;

  std::string model_path_;
  double scaling_factor_ = 1.0;
  std::vector<int64_t> sample_shape_;
  std::vector<int64_t> image_shape_;
  at::Device device_ = at::kCPU;
  at::ScalarType dtype_ = at::kFloat;
  mutable torch::jit::Module module_;
};

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_CHECKPOINT_LATENT_DECODER_H_
