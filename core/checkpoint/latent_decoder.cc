#include "core/checkpoint/latent_decoder.h"

#include <ATen/ATen.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/checkpoint/script_module.h"
#include "core/runtime/torch_runtime.h"

namespace memaudit {
namespace {

constexpr const char* kDecoderSignature = "forward(z: Tensor) -> Tensor, z [B, *sample_shape]";

}  // namespace

absl::StatusOr<std::unique_ptr<const LatentDecoder>> LatentDecoder::Load(
    const std::string& directory, const v1::ModelConfig& config, at::Device device,
    std::optional<at::ScalarType> dtype) {
  std::unique_ptr<LatentDecoder> decoder(new LatentDecoder());
  decoder->model_path_ = (std::filesystem::path(directory) / kModelFile).string();
  decoder->scaling_factor_ = config.latent().scaling_factor();
  decoder->sample_shape_.assign(config.sample_shape().begin(), config.sample_shape().end());
  decoder->image_shape_.assign(config.latent().image_shape().begin(),
                               config.latent().image_shape().end());
  decoder->device_ = device;
  ASSIGN_OR_RETURN(ScriptModule loaded, LoadScriptModule(decoder->model_path_, device, dtype));
  decoder->module_ = std::move(loaded.module);
  decoder->dtype_ = loaded.dtype;
  RETURN_IF_ERROR(
      CheckForwardArgumentCount(decoder->module_, decoder->model_path_, 1, kDecoderSignature));
  std::vector<int64_t> probe_shape{1};
  probe_shape.insert(probe_shape.end(), decoder->sample_shape_.begin(),
                     decoder->sample_shape_.end());
  absl::StatusOr<at::Tensor> probe = decoder->DecodeBatch(at::zeros(probe_shape));
  if (!probe.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(decoder->model_path_, ": probe with a zero latent ", ShapeString(probe_shape),
                     " failed: ", probe.status().message()));
  }
  return std::unique_ptr<const LatentDecoder>(std::move(decoder));
}

absl::StatusOr<at::Tensor> LatentDecoder::DecodeBatch(const at::Tensor& latents) const {
  std::vector<int64_t> expected{latents.size(0)};
  expected.insert(expected.end(), image_shape_.begin(), image_shape_.end());
  ASSIGN_OR_RETURN(
      at::Tensor images,
      ForwardWithShape(module_, (latents.to(device_, dtype_) / scaling_factor_).contiguous(),
                       expected, "the latent decoder", "batch, latent.image_shape"));
  images = images.to(at::kCPU, at::kFloat);
  if (!at::isfinite(images).all().item<bool>()) {
    return absl::FailedPreconditionError("the latent decoder returned non-finite values");
  }
  return images;
}

absl::StatusOr<at::Tensor> LatentDecoder::Decode(const at::Tensor& latents) const {
  std::vector<int64_t> expected = sample_shape_;
  if (latents.dim() != static_cast<int64_t>(expected.size()) + 1 ||
      latents.sizes().slice(1).vec() != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("latents of shape ", ShapeString(latents.sizes()),
                     " are not [B, *sample_shape] with sample_shape ", ShapeString(expected)));
  }
  std::vector<at::Tensor> parts;
  for (int64_t start = 0; start < latents.size(0); start += kDecodeBatch) {
    const int64_t end = std::min<int64_t>(latents.size(0), start + kDecodeBatch);
    absl::StatusOr<at::Tensor> part = DecodeBatch(latents.slice(0, start, end));
    if (!part.ok()) {
      // The module misbehaved: name its file (not the server's directory).
      return absl::Status(part.status().code(),
                          absl::StrCat(kModelFile, ": ", part.status().message()));
    }
    parts.push_back(*std::move(part));
  }
  if (parts.empty()) {
    std::vector<int64_t> shape{0};
    shape.insert(shape.end(), image_shape_.begin(), image_shape_.end());
    return at::empty(shape, at::kFloat);
  }
  return parts.size() == 1 ? parts[0] : at::cat(parts, 0);
}

}  // namespace memaudit
