#include "sample_curvature.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace memaudit {

absl::StatusOr<SpectrumMethod> ParseSpectrumMethod(const std::string& name) {
  if (name == "auto") return SpectrumMethod::kAuto;
  if (name == "dense") return SpectrumMethod::kDense;
  if (name == "arnoldi") return SpectrumMethod::kArnoldi;
  return absl::InvalidArgumentError(
      absl::StrCat("spectrum method \"", name, "\" is not auto, dense or arnoldi"));
}

SpectrumMethod ResolveSpectrumMethod(SpectrumMethod method, int64_t dimension,
                                     int64_t max_dense_dimension) {
  if (method != SpectrumMethod::kAuto) return method;
  return dimension > max_dense_dimension ? SpectrumMethod::kArnoldi : SpectrumMethod::kDense;
}

namespace {
absl::StatusOr<std::vector<SampleCurvature>> MeasureSamplesOrThrow(
    const Denoiser& denoiser, const std::vector<uint64_t>& seeds, const at::Tensor& conditions,
    const SampleCurvatureOptions& options, const ReferenceSet* reference, const StopCheck& stop,
    const MeasureProgress& progress) {
  const int64_t batch = static_cast<int64_t>(seeds.size());
  auto prepared = denoiser.PrepareConditions(conditions, batch);
  if (!prepared.ok()) return prepared.status();
  auto trajectory = SampleTrajectories(denoiser, seeds, *prepared, options.sampler, stop,
                                       [&](int64_t done, int64_t total) {
                                         if (progress) progress({"sampling", done, total});
                                       });
  if (!trajectory.ok()) return trajectory.status();

  std::vector<int64_t> timesteps = options.timesteps;
  if (timesteps.empty()) {
    timesteps.push_back(trajectory->timesteps[FirstStepBelowSigma(
        trajectory->timesteps, denoiser.schedule(), options.max_sigma)]);
  }
  std::vector<SampleCurvature> results(batch);
  const at::Tensor final_cpu = trajectory->final_sample.to(at::kCPU);
  for (int64_t b = 0; b < batch; ++b) {
    results[b].seed = seeds[b];
    results[b].sample = final_cpu[b];
  }
  if (reference != nullptr) {
    std::vector<NearestNeighbor> truth = reference->Nearest(final_cpu);
    for (int64_t b = 0; b < batch; ++b) results[b].truth = truth[b];
  }
  const at::Tensor rows = at::arange(
      batch, at::TensorOptions().dtype(at::kLong).device(trajectory->final_sample.device()));
  const int64_t total = static_cast<int64_t>(timesteps.size()) * batch;
  int64_t done = 0;
  for (int64_t t : timesteps) {
    auto x = StateAtTimestep(denoiser, *trajectory, t, *prepared, options.sampler.guidance);
    if (!x.ok()) return x.status();
    auto field = denoiser.ScoreField(t, options.score_kind, *prepared, options.sampler.guidance);
    if (!field.ok()) return field.status();
    // Samples are grouped so a group's Jacobian rows fill about one chunk:
    // small models share network calls across samples, and memory stays at
    // about chunk_rows × d numbers for large ones.
    const int64_t dim = denoiser.checkpoint().sample_numel();
    if (ResolveSpectrumMethod(options.method, dim, options.max_dense_dimension) ==
        SpectrumMethod::kArnoldi) {
      for (int64_t b = 0; b < batch; ++b) {
        auto spectrum =
            MatrixFreeSpectrum(*field, x->narrow(0, b, 1), rows.narrow(0, b, 1), t,
                               denoiser.schedule(), options.arnoldi, options.spectrum, stop);
        if (!spectrum.ok()) return spectrum.status();
        results[b].spectra.push_back(*std::move(spectrum));
        if (progress) progress({"curvature", ++done, total});
      }
      continue;
    }
    const int64_t group = std::max<int64_t>(1, options.jacobian.chunk_rows / dim);
    for (int64_t start = 0; start < batch; start += group) {
      const int64_t count = std::min(group, batch - start);
      auto jacobians = DenseJacobians(*field, x->narrow(0, start, count),
                                      rows.narrow(0, start, count), options.jacobian, stop);
      if (!jacobians.ok()) return jacobians.status();
      auto spectra = DenseSpectra(*jacobians, t, denoiser.schedule(), options.spectrum, stop);
      if (!spectra.ok()) return spectra.status();
      for (int64_t i = 0; i < count; ++i) {
        results[start + i].spectra.push_back(std::move((*spectra)[i]));
      }
      done += count;
      if (progress) progress({"curvature", done, total});
    }
  }
  return results;
}

}  // namespace

absl::StatusOr<std::vector<SampleCurvature>> MeasureSamples(
    const Denoiser& denoiser, const std::vector<uint64_t>& seeds, const at::Tensor& conditions,
    const SampleCurvatureOptions& options, const ReferenceSet* reference, const StopCheck& stop,
    const MeasureProgress& progress) {
  try {
    return MeasureSamplesOrThrow(denoiser, seeds, conditions, options, reference, stop, progress);
  } catch (const std::exception& e) {
    // LibTorch errors outside the guarded network calls (e.g. out of memory).
    return absl::InternalError(absl::StrCat("measurement failed: ", e.what()));
  }
}

}  // namespace memaudit
