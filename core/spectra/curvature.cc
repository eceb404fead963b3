#include "core/spectra/curvature.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/forward_grad.h>

#include <mutex>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/runtime/torch_runtime.h"

namespace memaudit {
namespace {

absl::Status CheckSameShape(const at::Tensor& x, const at::Tensor& v, const char* name) {
  if (!v.defined() || v.sizes() != x.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": must have the shape of x"));
  }
  return absl::OkStatus();
}

// LibTorch's forward-AD levels are process-wide: a second concurrent level
// throws ("nested forward mode AD"). One forward-mode JVP runs at a time;
// kAuto callers that find it busy use the double-backward identity instead.
std::mutex g_forward_ad_mutex;

// Releases a forward-AD level on scope exit.
class DualLevel {
 public:
  DualLevel() : level_(torch::autograd::ForwardADLevel::get_next_idx()) {}
  ~DualLevel() { torch::autograd::ForwardADLevel::release_idx(level_); }
  uint64_t level() const { return level_; }

 private:
  uint64_t level_;
};

at::Tensor ForwardModeJvp(const Field& field, const at::Tensor& x, const at::Tensor& rows,
                          const at::Tensor& v) {
  DualLevel level;
  at::Tensor dual = at::_make_dual(x.detach(), v.to(x.scalar_type()), level.level());
  at::Tensor out = field(dual, rows);
  return std::get<1>(at::_unpack_dual(out, level.level()));
}

at::Tensor DoubleBackwardJvp(const Field& field, const at::Tensor& x, const at::Tensor& rows,
                             const at::Tensor& v) {
  at::Tensor input = x.detach().requires_grad_(true);
  at::Tensor out = field(input, rows);
  // g(u) = Jᵀu is linear in u; ∂⟨g(u), v⟩/∂u = J v.
  at::Tensor u = at::zeros_like(out).requires_grad_(true);
  at::Tensor vjp = torch::autograd::grad({out}, {input}, {u}, /*retain_graph=*/true,
                                         /*create_graph=*/true)[0];
  return torch::autograd::grad({vjp}, {u}, {v.to(x.scalar_type())})[0];
}

}  // namespace

absl::StatusOr<at::Tensor> Vjp(const Field& field, const at::Tensor& x, const at::Tensor& rows,
                               const at::Tensor& v) {
  RETURN_IF_ERROR(CheckSameShape(x, v, "v"));
  try {
    c10::AutoGradMode grad_mode(true);
    at::Tensor input = x.detach().requires_grad_(true);
    at::Tensor out = field(input, rows);
    return torch::autograd::grad({out}, {input}, {v.to(out.scalar_type())})[0];
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInternal, "vector-Jacobian product failed", e);
  }
}

bool IsMissingBackward(const absl::Status& status) {
  return status.code() == absl::StatusCode::kInternal;
}

absl::StatusOr<RetainedVjp> RetainedVjp::Create(const Field& field, const at::Tensor& x,
                                                const at::Tensor& rows) {
  try {
    c10::AutoGradMode grad_mode(true);
    at::Tensor input = x.detach().requires_grad_(true);
    at::Tensor output = field(input, rows);
    if (!output.requires_grad()) {
      return absl::InternalError("the score field's output does not depend on x through autograd");
    }
    return RetainedVjp(std::move(input), std::move(output));
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInternal,
                      "forward pass for vector-Jacobian products failed", e);
  }
}

absl::StatusOr<at::Tensor> RetainedVjp::Apply(const at::Tensor& v) const {
  RETURN_IF_ERROR(CheckSameShape(input_, v, "v"));
  try {
    c10::AutoGradMode grad_mode(true);
    return torch::autograd::grad({output_}, {input_}, {v.to(output_.scalar_type())},
                                 /*retain_graph=*/true)[0];
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInternal, "vector-Jacobian product failed", e);
  }
}

absl::StatusOr<at::Tensor> Jvp(const Field& field, const at::Tensor& x, const at::Tensor& rows,
                               const at::Tensor& v, JvpMode mode, JvpMode* mode_used) {
  RETURN_IF_ERROR(CheckSameShape(x, v, "v"));
  std::unique_lock<std::mutex> forward_lock(g_forward_ad_mutex, std::defer_lock);
  if (mode == JvpMode::kForward) {
    forward_lock.lock();
  } else if (mode == JvpMode::kAuto && !forward_lock.try_lock()) {
    mode = JvpMode::kDoubleBackward;
  }
  if (mode != JvpMode::kDoubleBackward) {
    at::Tensor tangent;
    try {
      c10::AutoGradMode grad_mode(true);
      tangent = ForwardModeJvp(field, x, rows, v);
    } catch (const std::exception& e) {
      // An op without a forward-AD formula, or a dual-tensor restriction
      // (e.g. in-place ops); the double-backward identity covers these.
      if (mode == JvpMode::kForward) {
        return TorchError(absl::StatusCode::kInternal, "forward-mode JVP failed", e);
      }
    }
    if (tangent.defined()) {
      if (mode_used) *mode_used = JvpMode::kForward;
      return tangent;
    }
    if (mode == JvpMode::kForward) {
      return absl::InternalError(
          "forward-mode JVP returned no tangent (is TorchScript graph optimization on?)");
    }
  }
  if (forward_lock.owns_lock()) forward_lock.unlock();
  try {
    c10::AutoGradMode grad_mode(true);
    at::Tensor tangent = DoubleBackwardJvp(field, x, rows, v);
    if (mode_used) *mode_used = JvpMode::kDoubleBackward;
    return tangent;
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInternal, "Jacobian-vector product failed", e);
  }
}

absl::StatusOr<at::Tensor> DenseJacobians(const Field& field, const at::Tensor& x,
                                          const at::Tensor& rows, const JacobianOptions& options,
                                          const StopCheck& stop) {
  if (x.dim() < 2 || x.size(0) == 0) {
    return absl::InvalidArgumentError("x: expected a non-empty batch [B, *sample_shape]");
  }
  if (options.chunk_rows < 1) {
    return absl::InvalidArgumentError("chunk_rows must be positive");
  }
  const int64_t batch = x.size(0);
  const int64_t dim = x.numel() / batch;
  const int64_t total = batch * dim;
  const auto long_options = at::TensorOptions().dtype(at::kLong).device(x.device());
  at::Tensor jacobians = at::empty({batch, dim, dim}, x.options());
  at::Tensor flat_jacobians = jacobians.view({total, dim});
  const at::Tensor detached = x.detach();
  const at::Tensor sample_rows = rows.to(x.device());
  try {
    c10::AutoGradMode grad_mode(true);
    for (int64_t start = 0; start < total; start += options.chunk_rows) {
      RETURN_IF_ERROR(CheckStop(stop));
      const int64_t count = std::min(options.chunk_rows, total - start);
      // Output row r of the stacked Jacobians is row (r % d) of sample r / d.
      at::Tensor global = at::arange(start, start + count, long_options);
      at::Tensor sample = at::div(global, dim, "floor");
      at::Tensor component = global - sample * dim;
      at::Tensor input = detached.index_select(0, sample).requires_grad_(true);
      at::Tensor out = field(input, sample_rows.index_select(0, sample));
      at::Tensor selector = at::zeros({count, dim}, out.options());
      selector.scatter_(1, component.unsqueeze(1), 1.0);
      at::Tensor grads = torch::autograd::grad({out}, {input}, {selector.view(out.sizes())})[0];
      flat_jacobians.narrow(0, start, count).copy_(grads.reshape({count, dim}));
    }
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInternal, "Jacobian computation failed", e);
  }
  return jacobians;
}

}  // namespace memaudit
