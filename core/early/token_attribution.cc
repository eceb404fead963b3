#include "core/early/token_attribution.h"

#include <algorithm>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/early/early_metrics.h"
#include "core/runtime/torch_runtime.h"

namespace memaudit {

absl::StatusOr<TokenAttribution> ComputeTokenAttribution(
    const Denoiser& denoiser, const std::vector<uint64_t>& seeds, const AttributionInput& input,
    const SamplerOptions& sampler, const StopCheck& stop, AttributionTimestep timestep) {
  const DiffusionNetwork& network = denoiser.network();
  if (network.config().conditioning().kind() != v1::Conditioning::EMBEDDING) {
    return absl::InvalidArgumentError("token attribution: the model does not take embeddings");
  }
  if (seeds.empty()) return absl::InvalidArgumentError("token attribution: no seeds");
  if (!network.NullCondition(1).defined()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "token attribution: the model has no null condition (",
        DiffusionNetwork::kNullConditionFile, " or a text encoder) to compare the prompt with"));
  }
  if (!input.condition.defined() || input.condition.dim() < 1 || input.condition.size(0) != 1 ||
      !input.leaf.defined() || !input.leaf.requires_grad() || input.leaf.dim() < 1 ||
      !input.condition.requires_grad()) {
    return absl::InvalidArgumentError(
        "token attribution: expected one condition [1, ...] computed from a tensor that requires "
        "grad");
  }
  for (int64_t row : input.rows) {
    if (row < 0 || row >= input.leaf.size(0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("token attribution: row ", row, " outside [0, ", input.leaf.size(0), ")"));
    }
  }
  ASSIGN_OR_RETURN(const std::vector<int64_t> timesteps,
                   LeadingTimesteps(denoiser.schedule().num_train_timesteps(), sampler.num_steps,
                                    sampler.steps_offset));
  TokenAttribution result;
  result.timestep =
      timestep == AttributionTimestep::kFirst ? timesteps.front() : AlignmentTimestep(timesteps);
  result.samples = static_cast<int64_t>(seeds.size());
  if (input.rows.empty()) return result;
  try {
    const at::Tensor rows = at::tensor(input.rows, at::kLong).to(input.leaf.device());
    at::Tensor total;  // Σ over samples of ‖∂m/∂leaf_r‖ for r in `rows`
    // One sample per pass: the rows of a shared leaf (the table) would mix
    // the samples' gradients in a batch.
    for (uint64_t seed : seeds) {
      RETURN_IF_ERROR(CheckStop(stop));
      const at::Tensor x = InitialNoise(network, {seed});
      const at::Tensor t =
          at::full({1}, result.timestep, at::TensorOptions().dtype(at::kLong).device(x.device()));
      at::Tensor null_epsilon;
      {
        c10::NoGradGuard no_grad;
        null_epsilon = denoiser.Epsilon(x, t, network.NullCondition(1));
      }
      c10::AutoGradMode grad(true);
      ASSIGN_OR_RETURN(const at::Tensor condition, denoiser.PrepareConditions(input.condition, 1));
      const at::Tensor m =
          (denoiser.Epsilon(x, t, condition) - null_epsilon).to(at::kDouble).norm();
      const at::Tensor gradient =
          torch::autograd::grad({m}, {input.leaf}, {}, /*retain_graph=*/true)[0];
      const at::Tensor picked = gradient.detach().index_select(0, rows).to(at::kDouble);
      const at::Tensor norms = picked.reshape({picked.size(0), -1}).norm(2, 1);
      total = total.defined() ? total + norms : norms;
    }
    const at::Tensor mean = (total / static_cast<double>(seeds.size())).cpu().contiguous();
    result.scores.assign(mean.data_ptr<double>(), mean.data_ptr<double>() + mean.numel());
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInternal, "token attribution failed", e);
  }
  return result;
}

}  // namespace memaudit
