// Derivatives of a score field through the network: vector-Jacobian and
// Jacobian-vector products and the batched dense Jacobian (docs/DESIGN.md §2).
//
// For a Field f (denoiser.h) and a batch x [B, *shape], J_b = ∂f(x_b)/∂x_b is
// d×d with d = prod(shape); J_b[i, j] = ∂f_i/∂x_j. For a score field this is
// the Hessian of log p_t, which is NOT symmetric for a learned network.
// Functions are thread-safe if the field is. Errors from the network come
// back as INTERNAL with the LibTorch message.
#ifndef MEMAUDIT_CORE_SPECTRA_CURVATURE_H_
#define MEMAUDIT_CORE_SPECTRA_CURVATURE_H_

#include <ATen/Tensor.h>

#include <cstdint>
#include <utility>

#include "absl/status/statusor.h"
#include "core/base/stop.h"
#include "core/model/denoiser.h"

namespace memaudit {

// Jᵀv per sample: x, v [B, *shape], rows [B] (as for Field). One forward and
// one backward pass.
absl::StatusOr<at::Tensor> Vjp(const Field& field, const at::Tensor& x, const at::Tensor& rows,
                               const at::Tensor& v);

// Jᵀv at one fixed batch of points for many v: one forward pass whose
// autograd graph is kept, then one backward pass per product and no forward.
// Jᵀ has J's eigenvalues, so matrix-free spectra multiply by it: on the
// networks measured a retained backward costs a quarter to a third of a
// forward-mode JVP (docs/PERFORMANCE.md). Holds the graph's activations
// (about one forward's) until destroyed. Not thread-safe: one caller at a
// time; distinct instances are independent.
class RetainedVjp {
 public:
  // Runs the forward pass at x [B, *shape], rows [B]. INTERNAL if the
  // network fails (LibTorch's message).
  static absl::StatusOr<RetainedVjp> Create(const Field& field, const at::Tensor& x,
                                            const at::Tensor& rows);

  // Jᵀ_b v_b per sample, v [B, *shape] (x's shape; converted to x's dtype),
  // in x's dtype. INVALID_ARGUMENT for another shape; INTERNAL if the
  // backward pass fails.
  absl::StatusOr<at::Tensor> Apply(const at::Tensor& v) const;

 private:
  RetainedVjp(at::Tensor input, at::Tensor output)
      : input_(std::move(input)), output_(std::move(output)) {}
  at::Tensor input_;   // x, detached, requiring grad
  at::Tensor output_;  // field(input_), its graph retained
};

// Whether a failed RetainedVjp (Create or Apply) means "this model has no
// backward pass" — INTERNAL: a no_grad block, an op without a backward
// formula — for which J·v by Jvp is the fallback; not for a resource limit
// (RESOURCE_EXHAUSTED, e.g. out of memory) or a stop, which must end the
// computation.
bool IsMissingBackward(const absl::Status& status);

enum class JvpMode {
  kAuto,            // kForward, falling back to kDoubleBackward
  kForward,         // forward-mode AD (dual numbers): one forward pass
  kDoubleBackward,  // d/du ⟨Jᵀu, v⟩: works for any twice-differentiable model
};

// J·v per sample. kAuto tries forward-mode AD first; if the model has an op
// without a forward-AD formula, or the tangent comes back undefined
// (TorchScript's graph optimizer drops tangents, docs/DESIGN.md §6), it falls back
// to the double-backward identity. A forced kForward fails (INTERNAL) where
// kAuto would fall back. `mode_used`, if given, reports which ran.
absl::StatusOr<at::Tensor> Jvp(const Field& field, const at::Tensor& x, const at::Tensor& rows,
                               const at::Tensor& v, JvpMode mode = JvpMode::kAuto,
                               JvpMode* mode_used = nullptr);

struct JacobianOptions {
  // Jacobian rows computed per network call (across samples): the batch of
  // one forward + backward. Bounds memory at ~chunk_rows × activations;
  // 128 was fastest for the MNIST U-Net (bench/peer_spectrum.cc: 512 rows
  // took 0.76 s per spectrum, 128 rows 0.58 s, 784 rows 1.40 s).
  int64_t chunk_rows = 128;
};

// The dense Jacobians [B, d, d] (x's dtype) of field at each sample of x,
// rows [B] as for Field. Costs ⌈B·d / chunk_rows⌉ batched forward+backward
// passes. Checks `stop` between chunks.
absl::StatusOr<at::Tensor> DenseJacobians(const Field& field, const at::Tensor& x,
                                          const at::Tensor& rows,
                                          const JacobianOptions& options = {},
                                          const StopCheck& stop = {});

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_SPECTRA_CURVATURE_H_
