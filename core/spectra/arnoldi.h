// Matrix-free spectra: implicitly restarted Arnoldi (Spectra's
// GenEigsSolver) on the operator v ↦ Hᵀ·v (by default; H has the same
// eigenvalues), each product one backward pass through the network over a
// forward pass kept for the whole solve (docs/DESIGN.md §2.4). Gets k
// eigenvalues of a d×d curvature matrix for any d, with O(k) products per
// restart instead of d network rows and an O(d³) solve.
#ifndef MEMAUDIT_CORE_SPECTRA_ARNOLDI_H_
#define MEMAUDIT_CORE_SPECTRA_ARNOLDI_H_

#include <ATen/Tensor.h>

#include <complex>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/stop.h"
#include "core/model/denoiser.h"
#include "core/spectra/curvature.h"
#include "core/spectra/spectrum.h"

namespace memaudit {

// Which end of the spectrum Arnoldi converges to.
enum class EigenTarget {
  kLargestReal,       // the flattest / upward directions: flat count, n₊, width
  kLargestMagnitude,  // the steepest directions
  kSmallestReal,      // the most negative curvature
};
const char* EigenTargetName(EigenTarget target);

// The relative tolerance the service uses by default (its
// curvature.arnoldi_tolerance): what a verdict needs — the verdicts, n₊,
// flat counts and κ_max it gives match 1e-6's with fewer products
// (measured by bench/verdict_grade.cc; figures in docs/PERFORMANCE.md).
inline constexpr double kVerdictGradeTolerance = 1e-4;

// What each Arnoldi step multiplies by. Both give H's eigenvalues (Hᵀ has
// the same characteristic polynomial); they differ in cost and rounding.
enum class ArnoldiProduct {
  // Hᵀv: one forward pass with its graph kept (RetainedVjp), then one
  // backward pass per product (falling back to kJvp for a model that has no
  // backward, decided at the first product). The default: a backward pass
  // costs less than a JVP (docs/PERFORMANCE.md has the ratios).
  kRetainedTranspose,
  // H·v: one JVP per product (forward mode, double backward where forward
  // mode is unsupported: JvpMode::kAuto).
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
  // Samples whose spectra SpectraAt (sample_curvature.h) solves together in
  // lockstep (MatrixFreeSpectra); 1 solves them one after another, 0 lets
  // LockstepGroup choose.
  int64_t lockstep_samples = 0;
};

struct ArnoldiResult {
  // Converged eigenvalues by descending real part (at most k).
  std::vector<std::complex<double>> eigenvalues;
  int64_t matvecs = 0;     // products through the network (backward passes or JVPs)
  int64_t restarts = 0;    // Arnoldi restart iterations
  bool converged = false;  // all k converged within max_restarts
};

// The lockstep group's default size: 8 samples on an accelerator, on the
// premise that a batched network call costs about what one row does there;
// on a CPU as many as keep the group's states within 16,384 numbers (8 at
// d ≤ 2,048, 4 at d = 4,096, 1 from d = 16,384), because there a B-row
// backward pass costs about B single-row ones, so lockstep pays only where
// a call's fixed cost dominates, and B Krylov bases past the cache slow
// Spectra's work (bench/lockstep_spectra.cc; figures in docs/PERFORMANCE.md).
inline constexpr int64_t kMaxLockstepSamples = 8;
inline constexpr int64_t kCpuLockstepNumbers = 16384;
// options.lockstep_samples if set, else the default above for dimension d.
int64_t LockstepGroup(const ArnoldiOptions& options, int64_t dim, bool on_accelerator);

// The Krylov subspace size (ncv) ArnoldiEigenvalues uses for `options` at
// dimension d: options.subspace if set, else k + max(k + 1, min(2k, 64), 16)
// (3k for 8 ≤ k ≤ 32, ARPACK's customary 2k + 1 from k = 64); clamped to
// [k + 2, d]. 3k rather than 2k + 1 because a clustered largest-real end
// (conv nets) restarts far less with the larger subspace, at a small cost
// where few restarts are needed (docs/PERFORMANCE.md).
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

struct LockstepArnoldiResult {
  // Per point, as ArnoldiEigenvalues would return it: its eigenvalues and
  // products, or its own failure (INTERNAL when nothing converged).
  std::vector<absl::StatusOr<ArnoldiResult>> samples;
  int64_t network_calls = 0;   // batched products (each serves every solve still running)
  int64_t forward_passes = 0;  // network forwards: kept ones built, or batched JVPs
};

// ArnoldiEigenvalues at each of the B points x [B, *shape] (rows [B]), the B
// solves run in lockstep: each on its own thread (Spectra's float64 work runs
// concurrently), and every round the calling thread multiplies all the
// vectors the running solves wait on in ONE network call — a backward pass
// of B rows through one kept forward of the B points (rebuilt on the
// survivors once half have finished), or one batched JVP for a model
// without a backward pass. Each point gets the same start, operator and
// stopping rule as ArnoldiEigenvalues alone, so the same eigenvalues up to
// the rounding of a batched network call. Only the calling thread runs
// LibTorch. The outer status is a bad argument, the stop status, a network
// error (INTERNAL), or RESOURCE_EXHAUSTED when the solver threads cannot
// start or memory runs out (never a silent switch to JVPs); each aborts
// every solve, and no thread outlives the call. Per-point non-convergence is
// in `samples`. Memory: B Krylov bases and one B-row kept forward.
absl::StatusOr<LockstepArnoldiResult> LockstepArnoldiEigenvalues(const Field& field,
                                                                 const at::Tensor& x,
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

// MatrixFreeSpectrum at each of the points x [B, *shape], their solves (the
// k-window, then the max|λ| scale) in lockstep (LockstepArnoldiEigenvalues).
// Errors as MatrixFreeSpectrum; the first point's failure fails the batch.
absl::StatusOr<std::vector<Spectrum>> MatrixFreeSpectra(const Field& field, const at::Tensor& x,
                                                        const at::Tensor& rows, int64_t t,
                                                        const NoiseSchedule& schedule,
                                                        const ArnoldiOptions& arnoldi,
                                                        const SpectrumOptions& options = {},
                                                        const StopCheck& stop = {});

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_SPECTRA_ARNOLDI_H_
