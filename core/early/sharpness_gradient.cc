#include "core/early/sharpness_gradient.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/autograd.h>

#include "absl/strings/str_cat.h"
#include "core/base/shape_string.h"
#include "core/base/status_macros.h"
#include "core/early/early_metrics.h"

namespace memaudit {

absl::StatusOr<SharpnessGradient> FirstStepSharpnessGradient(const Denoiser& denoiser,
                                                             const at::Tensor& x_T,
                                                             const at::Tensor& conditions,
                                                             const SamplerOptions& sampler) {
  const DiffusionNetwork& network = denoiser.network();
  if (!x_T.defined() || x_T.dim() < 1 || x_T.size(0) < 1 ||
      x_T.sizes() != at::IntArrayRef(network.BatchShape(x_T.size(0)))) {
    return absl::InvalidArgumentError(
        absl::StrCat("x_T: must be [B, *sample_shape] with sample_shape ",
                     ShapeString(network.config().sample_shape())));
  }
  const int64_t batch = x_T.size(0);
  ASSIGN_OR_RETURN(const at::Tensor prepared, denoiser.PrepareConditions(conditions, batch));
  ASSIGN_OR_RETURN(const std::vector<int64_t> timesteps,
                   LeadingTimesteps(denoiser.schedule().num_train_timesteps(), sampler.num_steps,
                                    sampler.steps_offset));
  SharpnessGradient result;
  result.conditional = IsRealCondition(network, prepared, batch);
  result.timestep = timesteps.front();
  ASSIGN_OR_RETURN(
      const Field field,
      denoiser.ScoreField(result.timestep,
                          result.conditional ? ScoreKind::kDifference : ScoreKind::kConditional,
                          prepared));
  const at::Tensor rows =
      at::arange(batch, at::TensorOptions().dtype(at::kLong).device(x_T.device()));
  try {
    c10::AutoGradMode grad_mode(true);
    at::Tensor x = x_T.detach().clone().requires_grad_(true);
    const at::Tensor score = field(x, rows);
    // H·s by the double-backward identity, keeping the graph: Hᵀw is linear
    // in w, and ∂⟨Hᵀw, s⟩/∂w = H·s, differentiable in x through H and s.
    at::Tensor w = at::zeros_like(score).requires_grad_(true);
    const at::Tensor transposed = torch::autograd::grad({score}, {x}, {w},
                                                        /*retain_graph=*/true,
                                                        /*create_graph=*/true)[0];
    const at::Tensor product = torch::autograd::grad({transposed}, {w}, {score},
                                                     /*retain_graph=*/true,
                                                     /*create_graph=*/true)[0];
    const at::Tensor squared = product.pow(2).flatten(1).sum(1);
    const at::Tensor value = result.conditional ? squared.sqrt() : squared;
    result.gradient = torch::autograd::grad({value.sum()}, {x})[0].detach();
    result.value = value.detach().to(at::kCPU, at::kDouble);
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("the gradient of the first-step sharpness failed: ", e.what()));
  }
  return result;
}

}  // namespace memaudit
