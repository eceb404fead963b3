// Eigenvalue spectra of curvature matrices and their summary statistics
// (docs/DESIGN.md §1.2 and docs/VERDICTS.md).
//
// With κ_i = σ_t²·Re λ_i (normalized curvature): a memorized sample has
// κ ≈ −1 in every direction; flat directions (κ > −½) estimate the local
// intrinsic dimension; n₊ counts upward-curving directions.
#ifndef MEMAUDIT_CORE_SPECTRA_SPECTRUM_H_
#define MEMAUDIT_CORE_SPECTRA_SPECTRUM_H_

#include <ATen/Tensor.h>

#include <complex>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/stop.h"
#include "core/model/schedule.h"

namespace memaudit {

enum class SpectrumMethod {
  kAuto,     // dense up to the dense-dimension limit, Arnoldi above
  kDense,    // full Jacobian + LAPACK: all d eigenvalues
  kArnoldi,  // matrix-free: k eigenvalues by network products (arnoldi.h)
};
// "auto" | "dense" | "arnoldi".
const char* SpectrumMethodName(SpectrumMethod method);

// A flat direction: κ = σ_t²·Re λ above this (docs/DESIGN.md §1.2).
inline constexpr double kFlatKappa = -0.5;

// Dense spectra above this dimension are refused by default: a dense
// Jacobian is d² numbers (4096² float64 = 128 MiB) and LAPACK's cost is d³.
inline constexpr int64_t kDefaultMaxDenseDimension = 4096;

// The method kAuto resolves to for dimension d (kDense or kArnoldi).
SpectrumMethod ResolveSpectrumMethod(SpectrumMethod method, int64_t dimension,
                                     int64_t max_dense_dimension);

struct SpectrumOptions {
  // Eigenvalues of the symmetric part (H + Hᵀ)/2 instead of H. Never the
  // default: a learned score's Jacobian is not symmetric.
  bool symmetrize = false;
  // n₊ = #{Re λ > positive_tolerance · max|λ|}.
  double positive_tolerance = 1e-3;
};

struct SpectrumSummary {
  int64_t dimension = 0;       // number of eigenvalues summarized
  int64_t positive_count = 0;  // n₊
  int64_t flat_count = 0;      // #{κ > kFlatKappa}
  double min_kappa = 0.0;
  double max_kappa = 0.0;
  double mean_kappa = 0.0;
  // Width of the peak along its flattest direction in data units,
  // w = (σ_t/√ᾱ_t)·√(−1/κ_max − 1); +infinity when κ_max ≥ 0.
  double width = 0.0;
  // Radius of the peak in data units: the RMS distance from its centre of
  // the local Gaussian the curvature implies. Per direction i that Gaussian
  // has variance v_i = (σ_t²/ᾱ_t)·(−1/κ_i − 1) (exact for a Gaussian
  // mixture component; clamped at 0 where κ_i < −1), and
  // radius = √(Σ_i v_i); +infinity when κ_max ≥ 0. For a partial spectrum
  // from the largest-real end the d − k unseen directions are counted at
  // the variance of the smallest κ found: an upper bound.
  double radius = 0.0;
  // The radius relative to the noise at the evaluation step,
  // radius·√ᾱ_t/(σ_t·√d) = √(mean_i max(0, −1/κ_i − 1)): below 1 the peak is
  // narrower than the noise, i.e. a point mass at that resolution.
  // Dimensionless; +infinity when κ_max ≥ 0.
  double noise_radius = 0.0;
  // Summarizes only some eigenvalues (matrix-free spectra): counts are of
  // those; with the largest-real end, κ_max and the width are still exact.
  bool partial = false;
  // Every eigenvalue found was flat: there may be more flat directions.
  bool flat_count_is_lower_bound = false;
  // Matrix-free spectra: how many of the k eigenvalues asked for did not
  // converge (they are left out of every figure above). One of them may be
  // the flattest, so κ_max, n₊ and the radii may read sharper than the
  // truth: JudgeSample never calls such a sample MEMORIZED.
  int64_t unconverged = 0;
};

struct Spectrum {
  int64_t t = 0;              // training timestep of the evaluation point
  double sigma = 0.0;         // σ_t
  double sqrt_alpha_bar = 0;  // √ᾱ_t
  bool symmetrized = false;
  SpectrumMethod method = SpectrumMethod::kDense;  // kDense or kArnoldi
  int64_t matvecs = 0;                             // JVPs spent (arnoldi)
  int64_t requested = 0;                           // k asked for (arnoldi)
  bool converged = true;                           // arnoldi: all k converged
  // Eigenvalues of H = ∂s/∂x, sorted by descending real part (all d for
  // dense spectra, the k found for matrix-free ones).
  std::vector<std::complex<double>> eigenvalues;
  SpectrumSummary summary;
};

// Summary statistics of `eigenvalues` at noise level σ_t = sigma. For a
// partial spectrum (`partial`) the largest magnitude may not be among the
// eigenvalues found: n₊'s scale max|λ| is `max_magnitude` when the caller
// measured it (matrix-free spectra estimate it, arnoldi.h), else at least
// 1/σ_t² (the curvature of a fully steep direction). `full_dimension` is the
// dimension d of the matrix (for the radius bound; 0: eigenvalues.size()).
SpectrumSummary Summarize(const std::vector<std::complex<double>>& eigenvalues, double sigma,
                          double sqrt_alpha_bar, const SpectrumOptions& options = {},
                          bool partial = false, int64_t full_dimension = 0,
                          double max_magnitude = 0);

// Full spectra of square matrices `jacobians` [B, d, d] (any floating dtype
// and device; solved in float64 with LAPACK on the CPU) of the score at
// training timestep t. Checks `stop` between matrices.
absl::StatusOr<std::vector<Spectrum>> DenseSpectra(const at::Tensor& jacobians, int64_t t,
                                                   const NoiseSchedule& schedule,
                                                   const SpectrumOptions& options = {},
                                                   const StopCheck& stop = {});

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_SPECTRA_SPECTRUM_H_
