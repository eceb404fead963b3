// The per-sample measurement behind an audit: sample with seeds, pick the
// evaluation timestep on each trajectory, take the dense curvature spectrum
// there, and attach nearest-neighbour truth when a reference set exists.
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

enum class SpectrumMethod {
  kAuto,     // dense up to max_dense_dimension, Arnoldi above
  kDense,    // full Jacobian + LAPACK: all d eigenvalues
  kArnoldi,  // matrix-free: k eigenvalues by JVPs
};
absl::StatusOr<SpectrumMethod> ParseSpectrumMethod(const std::string& name);

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
  int64_t max_dense_dimension = 4096;
  ArnoldiOptions arnoldi;
};

// The method kAuto resolves to for dimension d.
SpectrumMethod ResolveSpectrumMethod(SpectrumMethod method, int64_t dimension,
                                     int64_t max_dense_dimension);

struct SampleCurvature {
  uint64_t seed = 0;
  at::Tensor sample;                     // final sample [*sample_shape], CPU
  std::vector<Spectrum> spectra;         // one per evaluation timestep, in order
  std::optional<NearestNeighbor> truth;  // when a reference set was given
};

struct SampleCurvatureProgress {
  const char* phase;  // "sampling" or "curvature"
  int64_t done;
  int64_t total;
};
using MeasureProgress = std::function<void(const SampleCurvatureProgress&)>;

// Measures one sample per seed. `conditions` as for SampleTrajectories.
// `reference` may be null. Returns the first error or the stop status.
absl::StatusOr<std::vector<SampleCurvature>> MeasureSamples(
    const Denoiser& denoiser, const std::vector<uint64_t>& seeds, const at::Tensor& conditions,
    const SampleCurvatureOptions& options, const ReferenceSet* reference,
    const StopCheck& stop = {}, const MeasureProgress& progress = {});

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_SAMPLE_CURVATURE_H_
