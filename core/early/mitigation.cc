#include "core/early/mitigation.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/early/sharpness_gradient.h"

namespace memaudit {
namespace {

// Per-row Euclidean norms of [B, ...] as [B, 1, ..., 1] (broadcastable).
at::Tensor RowNorms(const at::Tensor& x) {
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[0] = x.size(0);
  return x.flatten(1).norm(2, 1).view(shape);
}

}  // namespace

absl::StatusOr<MitigationResult> MitigateInitialNoise(const Denoiser& denoiser,
                                                      const at::Tensor& x_T,
                                                      const at::Tensor& conditions,
                                                      const MitigationOptions& options,
                                                      const StopCheck& stop) {
  if (options.max_steps < 0) return absl::InvalidArgumentError("max_steps: must be >= 0");
  if (!(options.step_size > 0 && options.step_size <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("step_size: must be in (0, 1], got ", options.step_size));
  }
  if (!(options.target >= 0)) return absl::InvalidArgumentError("target: must be >= 0");
  ASSIGN_OR_RETURN(SharpnessGradient current,
                   FirstStepSharpnessGradient(denoiser, x_T, conditions, options.sampler));
  const int64_t batch = x_T.size(0);
  MitigationResult result;
  result.conditional = current.conditional;
  result.before.resize(static_cast<size_t>(batch));
  result.steps.assign(static_cast<size_t>(batch), 0);
  for (int64_t b = 0; b < batch; ++b) result.before[b] = current.value[b].item<double>();
  const at::Tensor radius = RowNorms(x_T);
  at::Tensor x = x_T.detach().clone();
  for (int64_t step = 0; step < options.max_steps; ++step) {
    RETURN_IF_ERROR(CheckStop(stop));
    // Rows still above the target move; the others stay where they are.
    std::vector<int64_t> moving;
    for (int64_t b = 0; b < batch; ++b) {
      if (current.value[b].item<double>() > options.target) moving.push_back(b);
    }
    if (moving.empty()) break;
    const at::Tensor index = at::tensor(moving, at::kLong).to(x.device());
    const at::Tensor gradient = current.gradient.index_select(0, index);
    const at::Tensor norms = RowNorms(gradient).clamp_min(1e-300);
    const at::Tensor rows_radius = radius.index_select(0, index);
    at::Tensor moved =
        x.index_select(0, index) - options.step_size * rows_radius * gradient / norms;
    moved = moved * (rows_radius / RowNorms(moved).clamp_min(1e-300));
    x.index_copy_(0, index, moved);
    for (int64_t b : moving) ++result.steps[b];
    ASSIGN_OR_RETURN(current, FirstStepSharpnessGradient(denoiser, x, conditions, options.sampler));
  }
  result.after.resize(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) result.after[b] = current.value[b].item<double>();
  result.x_T = x;
  return result;
}

}  // namespace memaudit
