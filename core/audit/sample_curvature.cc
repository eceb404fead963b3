#include "core/audit/sample_curvature.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/checkpoint/latent_decoder.h"
#include "core/early/early_metrics.h"
#include "core/runtime/torch_runtime.h"

namespace memaudit {
namespace {

absl::StatusOr<std::vector<Spectrum>> SpectraAtOrThrow(
    const Denoiser& denoiser, const at::Tensor& x, int64_t t, const at::Tensor& conditions,
    const SampleCurvatureOptions& options, const StopCheck& stop, const MeasureProgress& progress) {
  const int64_t batch = x.size(0);
  ASSIGN_OR_RETURN(const Field field, denoiser.ScoreField(t, options.score_kind, conditions,
                                                          options.sampler.guidance));
  const at::Tensor rows =
      at::arange(batch, at::TensorOptions().dtype(at::kLong).device(x.device()));
  const int64_t dim = denoiser.network().sample_numel();
  std::vector<Spectrum> spectra;
  spectra.reserve(batch);
  if (ResolveSpectrumMethod(options.method, dim, options.max_dense_dimension) ==
      SpectrumMethod::kArnoldi) {
    // Groups of samples solve in lockstep: one network call per Arnoldi step
    // serves the whole group.
    const int64_t group = std::max<int64_t>(
        1, LockstepGroup(options.arnoldi, dim, /*on_accelerator=*/!x.device().is_cpu()));
    for (int64_t start = 0; start < batch; start += group) {
      const int64_t count = std::min(group, batch - start);
      ASSIGN_OR_RETURN(
          std::vector<Spectrum> computed,
          MatrixFreeSpectra(field, x.narrow(0, start, count), rows.narrow(0, start, count), t,
                            denoiser.schedule(), options.arnoldi, options.spectrum, stop));
      for (Spectrum& spectrum : computed) spectra.push_back(std::move(spectrum));
      if (progress) progress({MeasurePhase::kCurvature, start + count, batch});
    }
    return spectra;
  }
  // Samples are grouped so a group's Jacobian rows fill about one chunk:
  // small models share network calls across samples, and memory stays at
  // about chunk_rows × d numbers for large ones.
  const int64_t group = std::max<int64_t>(1, options.jacobian.chunk_rows / dim);
  for (int64_t start = 0; start < batch; start += group) {
    const int64_t count = std::min(group, batch - start);
    ASSIGN_OR_RETURN(const at::Tensor jacobians,
                     DenseJacobians(field, x.narrow(0, start, count), rows.narrow(0, start, count),
                                    options.jacobian, stop));
    ASSIGN_OR_RETURN(std::vector<Spectrum> computed,
                     DenseSpectra(jacobians, t, denoiser.schedule(), options.spectrum, stop));
    for (Spectrum& spectrum : computed) spectra.push_back(std::move(spectrum));
    if (progress) progress({MeasurePhase::kCurvature, start + count, batch});
  }
  return spectra;
}

absl::StatusOr<std::vector<SampleCurvature>> MeasureSamplesOrThrow(
    const Denoiser& denoiser, const std::vector<uint64_t>& seeds, const at::Tensor& conditions,
    const SampleCurvatureOptions& options, const ReferenceSet* reference, const StopCheck& stop,
    const MeasureProgress& progress) {
  const int64_t batch = static_cast<int64_t>(seeds.size());
  ASSIGN_OR_RETURN(const at::Tensor prepared, denoiser.PrepareConditions(conditions, batch));
  ASSIGN_OR_RETURN(const Trajectory trajectory,
                   SampleTrajectories(denoiser, seeds, prepared, options.sampler, stop,
                                      [&](int64_t done, int64_t total) {
                                        if (progress) {
                                          progress({MeasurePhase::kSampling, done, total});
                                        }
                                      }));
  std::vector<int64_t> timesteps = options.timesteps;
  if (timesteps.empty()) {
    timesteps.push_back(EvaluationTimestep(denoiser.schedule(), trajectory.timesteps.front(),
                                           options.evaluation_sigma));
  }
  std::vector<SampleCurvature> results(batch);
  const at::Tensor final_cpu = trajectory.final_sample.to(at::kCPU);
  for (int64_t b = 0; b < batch; ++b) {
    results[b].seed = seeds[b];
    results[b].sample = final_cpu[b];
  }
  if (reference != nullptr) {
    // A latent model's reference set may hold images: the samples are then
    // decoded and compared as images.
    at::Tensor compared = final_cpu;
    const LatentDecoder* decoder = denoiser.network().latent_decoder();
    if (decoder != nullptr && reference->items().sizes().slice(1).vec() == decoder->image_shape()) {
      RETURN_IF_ERROR(CheckStop(stop));
      ASSIGN_OR_RETURN(compared, decoder->Decode(trajectory.final_sample));
    }
    std::vector<NearestNeighbor> truth = reference->Nearest(compared);
    for (int64_t b = 0; b < batch; ++b) results[b].truth = truth[b];
  }
  const int64_t total = static_cast<int64_t>(timesteps.size()) * batch;
  int64_t done = 0;
  for (int64_t t : timesteps) {
    ASSIGN_OR_RETURN(at::Tensor x,
                     StateAtTimestep(denoiser, trajectory, t, prepared, options.sampler.guidance));
    if (CentresGuidedStates(denoiser, options, prepared)) {
      RETURN_IF_ERROR(CheckStop(stop));
      ASSIGN_OR_RETURN(x, PeakCentre(denoiser, x, t, prepared, options));
    }
    const int64_t done_before = done;
    ASSIGN_OR_RETURN(std::vector<Spectrum> spectra,
                     SpectraAtOrThrow(denoiser, x, t, prepared, options, stop,
                                      [&](const SampleCurvatureProgress& p) {
                                        done = done_before + p.done;
                                        if (progress) {
                                          progress({MeasurePhase::kCurvature, done, total});
                                        }
                                      }));
    const at::Tensor x_cpu = options.keep_points ? x.to(at::kCPU) : at::Tensor();
    for (int64_t b = 0; b < batch; ++b) {
      results[b].spectra.push_back(std::move(spectra[b]));
      if (options.keep_points) results[b].points.push_back(x_cpu[b]);
    }
  }
  return results;
}

}  // namespace

bool CentresGuidedStates(const Denoiser& denoiser, const SampleCurvatureOptions& options,
                         const at::Tensor& prepared) {
  if (!options.centre_guided_states || !prepared.defined()) return false;
  if (!IsRealCondition(denoiser.network(), prepared, prepared.size(0))) return false;
  const double w = options.sampler.guidance;
  switch (options.score_kind) {
    case ScoreKind::kConditional:
      return w != 1.0;
    case ScoreKind::kUnconditional:
      return w != 0.0;
    default:  // the guided field is the sampled one; the difference is no score
      return false;
  }
}

absl::StatusOr<at::Tensor> PeakCentre(const Denoiser& denoiser, const at::Tensor& x, int64_t t,
                                      const at::Tensor& conditions,
                                      const SampleCurvatureOptions& options) {
  if (options.score_kind == ScoreKind::kDifference) return x;
  ASSIGN_OR_RETURN(const Field field, denoiser.ScoreField(t, options.score_kind, conditions,
                                                          options.sampler.guidance));
  const double variance = 1.0 - denoiser.schedule().alpha_bar(t);
  c10::NoGradGuard no_grad;
  try {
    const at::Tensor rows =
        at::arange(x.size(0), at::TensorOptions().dtype(at::kLong).device(x.device()));
    at::Tensor centre = x;
    for (int step = 0; step < std::max(options.centring_steps, 1); ++step) {
      centre = centre + variance * field(centre, rows);
    }
    return centre;
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInternal, "network call failed", e);
  }
}

int64_t EvaluationTimestep(const NoiseSchedule& schedule, int64_t first_timestep, double sigma) {
  return std::min(schedule.TimestepNearestSigma(sigma), first_timestep);
}

absl::StatusOr<std::vector<Spectrum>> SpectraAt(const Denoiser& denoiser, const at::Tensor& x,
                                                int64_t t, const at::Tensor& conditions,
                                                const SampleCurvatureOptions& options,
                                                const StopCheck& stop,
                                                const MeasureProgress& progress) {
  try {
    return SpectraAtOrThrow(denoiser, x, t, conditions, options, stop, progress);
  } catch (const std::exception& e) {
    // LibTorch errors outside the guarded network calls (e.g. out of memory).
    return absl::InternalError(absl::StrCat("spectrum failed: ", e.what()));
  }
}

absl::StatusOr<std::vector<SampleCurvature>> MeasureSamples(
    const Denoiser& denoiser, const std::vector<uint64_t>& seeds, const at::Tensor& conditions,
    const SampleCurvatureOptions& options, const ReferenceSet* reference, const StopCheck& stop,
    const MeasureProgress& progress) {
  try {
    return MeasureSamplesOrThrow(denoiser, seeds, conditions, options, reference, stop, progress);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("measurement failed: ", e.what()));
  }
}

}  // namespace memaudit
