// The per-sample measurement behind an audit and the Spectrum RPC: sample
// with seeds, pick the evaluation timestep on each trajectory, take the
// curvature spectrum there (dense or matrix-free), and attach
// nearest-neighbour truth when a reference set exists.
#ifndef MEMAUDIT_CORE_SAMPLE_CURVATURE_H_
#define MEMAUDIT_CORE_SAMPLE_CURVATURE_H_

#include <ATen/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "arnoldi.h"
#include "curvature.h"
#include "denoiser.h"
#include "reference_set.h"
#include "sampler.h"
#include "spectrum.h"
#include "stop.h"

namespace memaudit {

// Default evaluation point: the first sampling step with σ_t below this
// (docs/DESIGN.md §1.3).
inline constexpr double kDefaultEvaluationMaxSigma = 0.1;

struct SampleCurvatureOptions {
  SamplerOptions sampler;
  // Evaluation timesteps; empty: the first sampling step with
  // σ_t < max_sigma. Several give a κ profile.
  std::vector<int64_t> timesteps;
  double max_sigma = kDefaultEvaluationMaxSigma;
  ScoreKind score_kind = ScoreKind::kConditional;
  JacobianOptions jacobian;
  SpectrumOptions spectrum;
  SpectrumMethod method = SpectrumMethod::kAuto;
  int64_t max_dense_dimension = kDefaultMaxDenseDimension;
  ArnoldiOptions arnoldi;
  // Keep the state x_t at each evaluation step (SampleCurvature::points).
  bool keep_points = false;
};

struct SampleCurvature {
  uint64_t seed = 0;
  at::Tensor sample;                     // final sample [*sample_shape], CPU
  std::vector<Spectrum> spectra;         // one per evaluation timestep, in order
  std::optional<NearestNeighbor> truth;  // when a reference set was given
  // x_t at each evaluation timestep [*sample_shape], CPU (keep_points).
  std::vector<at::Tensor> points;
};

enum class MeasurePhase { kSampling, kCurvature };

struct SampleCurvatureProgress {
  MeasurePhase phase;
  int64_t done;   // sampling steps, or spectra, finished in this phase
  int64_t total;  // of this phase
};
using MeasureProgress = std::function<void(const SampleCurvatureProgress&)>;

// Spectra of the score Jacobian at the points x [B, *sample_shape] (on the
// model's device and dtype) at training timestep t, with `conditions`
// prepared for B rows (Denoiser::PrepareConditions). Dense or Arnoldi as
// options.method resolves for the model's dimension; the sampler options are
// used only for the guidance scale. `progress` gets kCurvature events.
absl::StatusOr<std::vector<Spectrum>> SpectraAt(const Denoiser& denoiser, const at::Tensor& x,
                                                int64_t t, const at::Tensor& conditions,
                                                const SampleCurvatureOptions& options,
                                                const StopCheck& stop = {},
                                                const MeasureProgress& progress = {});

// Measures one sample per seed. `conditions` as for SampleTrajectories.
// `reference` may be null. Returns the first error or the stop status.
absl::StatusOr<std::vector<SampleCurvature>> MeasureSamples(
    const Denoiser& denoiser, const std::vector<uint64_t>& seeds, const at::Tensor& conditions,
    const SampleCurvatureOptions& options, const ReferenceSet* reference,
    const StopCheck& stop = {}, const MeasureProgress& progress = {});

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_SAMPLE_CURVATURE_H_
