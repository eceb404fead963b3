// Matrix-free spectra: implicitly restarted Arnoldi (Spectra's
// GenEigsSolver) on the operator v ↦ Hᵀ·v (by default; H has the same
// eigenvalues), each product one backward pass through the network over a
// forward pass kept for the whole solve (docs/DESIGN.md §2.4). Gets k
// eigenvalues of a d×d curvature matrix for any d, with O(k) products per
// restart instead of d network rows and an O(d³) solve.
#ifndef MEMAUDIT_CORE_ARNOLDI_H_
#define MEMAUDIT_CORE_ARNOLDI_H_

#include <ATen/Tensor.h>

#include <complex>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "curvature.h"
#include "denoiser.h"
#include "spectrum.h"
#include "stop.h"

namespace memaudit {

// Which end of the spectrum Arnoldi converges to.
enum class EigenTarget {
  kLargestReal,       // the flattest / upward directions: flat count, n₊, width
  kLargestMagnitude,  // the steepest directions
  kSmallestReal,      // the most negative curvature
};
absl::StatusOr<EigenTarget> ParseEigenTarget(const std::string& name);
const char* EigenTargetName(EigenTarget target);

// The relative tolerance the service uses by default (its
// curvature.arnoldi_tolerance): what a verdict needs. On mnist39 (12 samples)
// and a 4×64×64 conv net, verdicts, n₊ and the flat count among the k found
// and κ_max (to 3e-7) were the same as at 1e-6, with 5–30% fewer JVPs
// (bench/verdict_grade.cc, docs/PERFORMANCE.md).
inline constexpr double kVerdictGradeTolerance = 1e-4;

// What each Arnoldi step multiplies by. Both give H's eigenvalues (Hᵀ has
// the same characteristic polynomial); they differ in cost and rounding.
enum class ArnoldiProduct {
  // Hᵀv: one forward pass with its graph kept (RetainedVjp), then one
  // backward pass per product (falling back to kJvp for a model that has no
  // backward, decided before the first product): 3–4× cheaper than a JVP on the networks
  // measured, about 2× per Arnoldi step at d = 16,384 where Spectra's
  // orthogonalization costs as much (docs/PERFORMANCE.md).
  kRetainedTranspose,
  // H·v: one forward-mode (or double-backward) JVP per product, jvp_mode.
  kJvp,
};

struct ArnoldiOptions {
  EigenTarget target = EigenTarget::kLargestReal;
  // k: eigenvalues wanted. Ask for well above the expected number of flat
  // directions; when all k come out flat the flat count is a lower bound.
  int64_t num_eigenvalues = 24;
  // Krylov subspace size (ncv); 0 picks ArnoldiSubspace's default.
  int64_t subspace = 0;
  int64_t max_restarts = 500;
  // Relative tolerance on Ritz values (Spectra's convergence test).
  double tolerance = 1e-6;
  // Seed of the random starting vector (results are deterministic).
  uint64_t seed = 0;
  ArnoldiProduct product = ArnoldiProduct::kRetainedTranspose;
  JvpMode jvp_mode = JvpMode::kAuto;  // for ArnoldiProduct::kJvp
};

struct ArnoldiResult {
  // Converged eigenvalues by descending real part (at most k).
  std::vector<std::complex<double>> eigenvalues;
  int64_t matvecs = 0;     // products through the network (backward passes or JVPs)
  int64_t restarts = 0;    // Arnoldi restart iterations
  bool converged = false;  // all k converged within max_restarts
};

// The Krylov subspace size (ncv) ArnoldiEigenvalues uses for `options` at
// dimension d: options.subspace if set, else k + max(k + 1, min(2k, 64), 16)
// (3k for 8 ≤ k ≤ 32, ARPACK's customary 2k + 1 from k = 64); clamped to
// [k + 2, d]. 3k rather than 2k + 1: on a 4×64×64 conv net (d = 16,384,
// k = 24, clustered largest-real end) it halved the products per spectrum
// and removed a 3× spread across random starts; on the MNIST U-Net
// (d = 784), which needs few restarts, it costs up to 10%
// (docs/PERFORMANCE.md).
int64_t ArnoldiSubspace(const ArnoldiOptions& options, int64_t dim);

// k eigenvalues of J = ∂field/∂x at the single point x [1, *shape] (rows
// [1]). Computed in float64 by Spectra; each matvec is one network product
// (options.product) in the model's dtype. INVALID_ARGUMENT for k < 1 or k + 2 > d (use the dense
// path for tiny d); the stop status when `stop` says stop (checked before
// every matvec); INTERNAL when nothing converged.
absl::StatusOr<ArnoldiResult> ArnoldiEigenvalues(const Field& field, const at::Tensor& x,
                                                 const at::Tensor& rows,
                                                 const ArnoldiOptions& options,
                                                 const StopCheck& stop = {});

// The matrix-free Spectrum of the score field at training timestep t: the
// eigenvalues Arnoldi found, summarized as a partial spectrum.
absl::StatusOr<Spectrum> MatrixFreeSpectrum(const Field& field, const at::Tensor& x,
                                            const at::Tensor& rows, int64_t t,
                                            const NoiseSchedule& schedule,
                                            const ArnoldiOptions& arnoldi,
                                            const SpectrumOptions& options = {},
                                            const StopCheck& stop = {});

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_ARNOLDI_H_
