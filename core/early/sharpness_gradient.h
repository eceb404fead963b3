// The first-step sharpness as a function of the initial noise, with its
// gradient: what a guard against copying optimizes (issue #14: move x_T to
// where the first step is not sharp, then sample from it).
//
// At the first sampling timestep t of `sampler` (early_metrics.h):
//   a real condition c: Jeon et al.'s ‖H^Δ(x)·s^Δ(x)‖, s^Δ = s_c − s_∅;
//   otherwise:          ‖H(x)·s(x)‖²,
// for each row x of x_T, and ∂/∂x_T of it. The product H·s is the
// double-backward JVP built with its graph (create_graph), and the gradient
// is reverse mode through it: third derivatives of the network, so every op
// of the model must be twice differentiable (LibTorch's own ops are; a
// TorchScript model whose graph drops them fails with INTERNAL).
// Thread-safe if the denoiser is.
#ifndef MEMAUDIT_CORE_EARLY_SHARPNESS_GRADIENT_H_
#define MEMAUDIT_CORE_EARLY_SHARPNESS_GRADIENT_H_

#include <ATen/Tensor.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "core/model/denoiser.h"
#include "core/model/sampler.h"

namespace memaudit {

struct SharpnessGradient {
  bool conditional = false;  // Jeon's metric (true) or ‖Hs‖² (false)
  int64_t timestep = 0;      // the first sampling timestep
  at::Tensor value;          // [B] float64: the metric per row
  at::Tensor gradient;       // [B, *sample_shape], x_T's dtype and device: ∂value_b/∂x_T[b]
};

// `x_T` [B, *sample_shape] on the model's device (the sampler's initial
// state), `conditions` as for Denoiser::PrepareConditions (undefined: the
// null condition / unconditional). The value equals ComputeEarlyMetrics'
// jeon (or hessian_score_squared) at K = 1 for the same x_T.
// INVALID_ARGUMENT for a bad shape or condition, INTERNAL for LibTorch
// errors.
absl::StatusOr<SharpnessGradient> FirstStepSharpnessGradient(const Denoiser& denoiser,
                                                             const at::Tensor& x_T,
                                                             const at::Tensor& conditions,
                                                             const SamplerOptions& sampler);

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_EARLY_SHARPNESS_GRADIENT_H_
