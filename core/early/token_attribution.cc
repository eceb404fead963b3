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
namespace {

// What both measures need: a model that takes embeddings and has a null
// condition, seeds, and the timestep. Returns the result to fill in.
absl::StatusOr<TokenAttribution> Prepare(const Denoiser& denoiser,
                                         const std::vector<uint64_t>& seeds,
                                         const SamplerOptions& sampler,
                                         AttributionTimestep timestep) {
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
  ASSIGN_OR_RETURN(const std::vector<int64_t> timesteps,
                   LeadingTimesteps(denoiser.schedule().num_train_timesteps(), sampler.num_steps,
                                    sampler.steps_offset));
  TokenAttribution result;
  result.timestep =
      timestep == AttributionTimestep::kFirst ? timesteps.front() : AlignmentTimestep(timesteps);
  result.samples = static_cast<int64_t>(seeds.size());
  return result;
}

// The scores' mean over samples from their sum.
void SetMeanScores(const at::Tensor& total, TokenAttribution* result) {
  const at::Tensor mean =
      (total.to(at::kDouble) / static_cast<double>(result->samples)).cpu().contiguous();
  result->scores.assign(mean.data_ptr<double>(), mean.data_ptr<double>() + mean.numel());
}

}  // namespace

absl::StatusOr<TokenAttribution> ComputeTokenDeletions(
    const Denoiser& denoiser, const std::vector<uint64_t>& seeds, const at::Tensor& condition,
    const at::Tensor& deletions, const SamplerOptions& sampler, const StopCheck& stop,
    AttributionTimestep timestep, int64_t rows_per_call) {
  ASSIGN_OR_RETURN(TokenAttribution result, Prepare(denoiser, seeds, sampler, timestep));
  if (rows_per_call < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("token attribution: ", rows_per_call, " rows per call"));
  }
  if (!condition.defined() || !deletions.defined() || condition.dim() < 1 ||
      condition.size(0) != 1 || deletions.dim() != condition.dim() ||
      deletions.sizes().slice(1) != condition.sizes().slice(1)) {
    return absl::InvalidArgumentError(
        "token attribution: expected one condition [1, ...] and its deletions [T, ...] of the "
        "same shape");
  }
  const int64_t tokens = deletions.size(0);
  if (tokens == 0) return result;
  const DiffusionNetwork& network = denoiser.network();
  try {
    c10::NoGradGuard no_grad;
    // Row 0 the prompt, row 1 + i the prompt without token i.
    ASSIGN_OR_RETURN(const at::Tensor conditions,
                     denoiser.PrepareConditions(
                         at::cat({condition, deletions.to(condition.options())}), tokens + 1));
    at::Tensor total;  // Σ over samples of m(prompt) − m(without token i)
    for (uint64_t seed : seeds) {
      RETURN_IF_ERROR(CheckStop(stop));
      const at::Tensor x = InitialNoise(network, {seed});
      const auto t = [&](int64_t rows) {
        return at::full({rows}, result.timestep,
                        at::TensorOptions().dtype(at::kLong).device(x.device()));
      };
      const at::Tensor null_epsilon = denoiser.Epsilon(x, t(1), network.NullCondition(1));
      std::vector<at::Tensor> norms;
      for (int64_t start = 0; start <= tokens; start += rows_per_call) {
        RETURN_IF_ERROR(CheckStop(stop));
        const int64_t rows = std::min(rows_per_call, tokens + 1 - start);
        std::vector<int64_t> shape = x.sizes().vec();
        shape[0] = rows;
        // Contiguous: a module may write to or view its input's batch.
        const at::Tensor epsilon = denoiser.Epsilon(x.expand(shape).contiguous(), t(rows),
                                                    conditions.slice(0, start, start + rows));
        norms.push_back((epsilon - null_epsilon).to(at::kDouble).reshape({rows, -1}).norm(2, 1));
      }
      const at::Tensor m = at::cat(norms);
      const at::Tensor drop = m[0] - m.slice(0, 1);
      total = total.defined() ? total + drop : drop;
    }
    SetMeanScores(total, &result);
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInternal, "token attribution failed", e);
  }
  return result;
}

absl::StatusOr<TokenAttribution> ComputeTokenGradients(
    const Denoiser& denoiser, const std::vector<uint64_t>& seeds, const GradientInput& input,
    const SamplerOptions& sampler, const StopCheck& stop, AttributionTimestep timestep) {
  ASSIGN_OR_RETURN(TokenAttribution result, Prepare(denoiser, seeds, sampler, timestep));
  if (!input.condition.defined() || input.condition.dim() < 1 || input.condition.size(0) != 1 ||
      !input.leaf.defined() || !input.leaf.requires_grad() || input.leaf.dim() < 1) {
    return absl::InvalidArgumentError(
        "token gradient: expected one condition [1, ...] computed from a tensor that requires "
        "grad");
  }
  if (!input.condition.requires_grad()) {
    return absl::InvalidArgumentError(
        "token gradient: the prompt's embedding does not require grad, so no gradient reaches "
        "the token-embedding table (does the text encoder detach its output?)");
  }
  for (int64_t row : input.rows) {
    if (row < 0 || row >= input.leaf.size(0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("token gradient: row ", row, " outside [0, ", input.leaf.size(0), ")"));
    }
  }
  if (input.rows.empty()) return result;
  const DiffusionNetwork& network = denoiser.network();
  try {
    const at::Tensor rows = at::tensor(input.rows, at::kLong).to(input.leaf.device());
    at::Tensor total;  // Σ over samples of ‖∂m/∂leaf_r‖ for r in `rows`
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
    SetMeanScores(total, &result);
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInternal, "token attribution failed", e);
  }
  return result;
}

}  // namespace memaudit
