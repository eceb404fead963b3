// Early (first-step) memorization metrics (docs/DESIGN.md §2): computed at the
// first K sampling steps, no eigen-solve, so a memorizing condition can be
// flagged before generation finishes.
//
// Conditional (a real condition c against the null condition ∅):
//   Wen et al.:  ‖ε̂_c − ε̂_∅‖₂
//   Jeon et al.: ‖H^Δ·s^Δ‖₂ with s^Δ = s_c − s_∅ and H^Δ = H_c − H_∅: one
//                JVP of the difference field (one batched network call for
//                c and ∅) at v = s^Δ.
//   Asthana & Belagiannis (ICLR 2026), denoising-free: at the initial noise
//   x_T, whatever K is,
//     norm       ‖ε̂_c − ε̂_∅‖ at the first sampling timestep (Wen's at K = 1)
//     alignment  cos(ε̂_∅, ε̂_c − ε̂_∅) at the schedule's third-to-last
//                sampling timestep (low noise), the cosine over the whole
//                sample; memorized conditions align (higher is memorized)
//   Two network calls of 2B rows (c and ∅ at each timestep) and no
//   derivative; the first is also Wen's at x_T (shared at K = 1).
// Unconditional (Jeon et al., Lemmas 4.1/4.3): ‖s‖² (E = −tr H), ‖H·s‖²
// (E = −tr H³), and a Hutchinson estimate of tr H (mean of zᵀHz over
// Rademacher probes z).
// Each of Wen's, Jeon's and the unconditional ones is averaged over the K
// steps for each sample, then over samples.
#ifndef MEMAUDIT_CORE_EARLY_EARLY_METRICS_H_
#define MEMAUDIT_CORE_EARLY_EARLY_METRICS_H_

#include <ATen/Tensor.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/stop.h"
#include "core/early/early_metric.h"
#include "core/model/denoiser.h"
#include "core/model/sampler.h"

namespace memaudit {

struct EarlyMetricOptions {
  SamplerOptions sampler;  // the schedule of steps and the guidance
  int64_t steps = 1;       // K: the first K sampling steps
  int64_t hutchinson_probes = 8;
  uint64_t probe_seed = 0;
  // false: only the metrics from forward passes (Wen's, the anisotropy pair,
  // ‖s‖²), none that needs a JVP or backward pass — a screen's cheap path.
  bool derivative_metrics = true;
};

// Per-sample values (each averaged over the K steps).
struct EarlyMetricSamples {
  bool conditional = false;                   // Wen / Jeon filled; else the unconditional three
  std::vector<double> wen;                    // ‖ε̂_c − ε̂_∅‖
  std::vector<double> jeon;                   // ‖H^Δ s^Δ‖
  std::vector<double> score_norm_squared;     // ‖s‖²
  std::vector<double> hessian_score_squared;  // ‖H s‖²
  std::vector<double> hutchinson_trace;       // ≈ tr H
  std::vector<double> anisotropy_norm;        // ‖ε̂_c − ε̂_∅‖ at x_T, first timestep
  std::vector<double> anisotropy_alignment;  // cos(ε̂_∅, ε̂_c − ε̂_∅) at x_T, low timestep
  std::vector<int64_t> timesteps;            // the K timesteps used
  int64_t alignment_timestep = -1;           // the low timestep (conditional)
};

// The metrics for one sample per seed under `conditions` (as for
// SampleTrajectories). Conditional metrics need a conditional model and a
// non-null condition; otherwise the unconditional ones are computed.
// FAILED_PRECONDITION naming the metric and seed when a value is not finite
// (the network broke down there): never a NaN that reads as unflagged.
absl::StatusOr<EarlyMetricSamples> ComputeEarlyMetrics(const Denoiser& denoiser,
                                                       const std::vector<uint64_t>& seeds,
                                                       const at::Tensor& conditions,
                                                       const EarlyMetricOptions& options,
                                                       const StopCheck& stop = {});

// Whether `prepared` (Denoiser::PrepareConditions for `batch` rows) is a real
// condition of a conditional model, not the null one: conditional metrics
// (Wen, Jeon) apply; otherwise the unconditional ones.
bool IsRealCondition(const DiffusionNetwork& network, const at::Tensor& prepared, int64_t batch);

// The per-sample values of `metric`, oriented so higher means sharper
// (negative_trace is −hutchinson_trace); empty when `samples` are of the
// other kind (conditional vs unconditional), when the metric was not
// computed (derivative_metrics false) or is scored among conditions
// (EarlyMetricInfo::among_conditions).
std::vector<double> EarlyMetricValues(const EarlyMetricSamples& samples, EarlyMetric metric);

double Mean(const std::vector<double>& values);

// The low-noise timestep of the anisotropy alignment: the third-to-last of
// the sampling timesteps (descending), or the first when there are fewer
// than three.
int64_t AlignmentTimestep(const std::vector<int64_t>& sampling_timesteps);

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_EARLY_EARLY_METRICS_H_
