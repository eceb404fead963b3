// Loading a model directory (docs/DESIGN.md §4): its file names, the load
// options (device, compute precision, a call observer) and LoadModel, which
// returns the network as the engine sees it (core/model/diffusion_network.h).
// Code that loads models includes this header, not checkpoint.h, so a change
// to how a checkpoint is held rebuilds only core/checkpoint/.
#ifndef MEMAUDIT_CORE_CHECKPOINT_LOAD_MODEL_H_
#define MEMAUDIT_CORE_CHECKPOINT_LOAD_MODEL_H_

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "core/model/diffusion_network.h"

namespace memaudit {

// File names inside a model directory. Text-to-image models also ship
// TextEncoder's files (text_encoder.pt and a tokenizer), latent models
// LatentDecoder's (vae_decoder.pt), EMBEDDING models optionally
// DiffusionNetwork::kNullConditionFile (models with a text encoder use the
// embedding of "" when it is absent).
inline constexpr char kModelConfigFile[] = "config.pbtxt";
inline constexpr char kModelNetworkFile[] = "model.pt";

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
  // checkpoints: only the networks run reduced, and DiffusionNetwork::dtype() (the
  // sampling state, Krylov bases, eigen-solves, distances) stays float32.
  std::optional<at::ScalarType> dtype;
  // Called after every network call with the batch rows and whether
  // gradients were being recorded (curvature) or not (sampling). Used for
  // metrics; must be thread-safe and cheap. Not called for the load probe.
  std::function<void(int64_t rows, bool with_gradient)> forward_observer;
};

// Loads `directory`, validating everything up front (config fields, archive
// integrity, the forward signature and output shape, probed with a tiny
// batch), so a network that loads is usable. Errors name the file and the
// field or problem: NOT_FOUND for a missing directory/file, INVALID_ARGUMENT
// for a bad config, a corrupt archive, a forward that rejects the
// contract's arguments or returns the wrong shape; FAILED_PRECONDITION for
// an unavailable device, or a network that does not run in the reduced
// precision asked for (e.g. float16 on a CPU whose LibTorch has no float16
// kernels for its layers, or a traced archive with float32 baked into its
// graph), naming the file. The result is immutable; its Forward is safe to
// call from several threads at once.
absl::StatusOr<std::shared_ptr<const DiffusionNetwork>> LoadModel(
    const std::string& directory, const CheckpointOptions& options = {});

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_CHECKPOINT_LOAD_MODEL_H_
