// Benchmark: matrix-free spectra of several samples solved in lockstep
// (MatrixFreeSpectra: one network call per Arnoldi step for the whole group)
// against the same spectra one after another (MatrixFreeSpectrum), on the
// same points, in one run. For each group size B it prints seconds per
// spectrum, network calls and vectors per spectrum, forward passes, the
// ratio to the sequential run, and the largest eigenvalue difference from
// the sequential spectra (relative to max|λ|); verdict-level fields (κ_max,
// n₊, the flat count) are compared too.
//
//   build/bench/memaudit-bench-lockstep --model checkpoints/mnist39 --points 8 --groups 1,2,4,8
//   build/bench/memaudit-bench-lockstep --model DIR/conv4x64 --points 8 --groups 4,8
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <complex>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "core/checkpoint/load_model.h"
#include "core/model/denoiser.h"
#include "core/model/sampler.h"
#include "core/runtime/torch_runtime.h"
#include "core/spectra/arnoldi.h"

namespace {

using namespace memaudit;

double Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// This process's peak resident set (VmHWM), MiB; -1 if unreadable.
double PeakResidentMiB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    long long kib = 0;
    if (std::sscanf(line.c_str(), "VmHWM: %lld kB", &kib) == 1) return kib / 1024.0;
  }
  return -1;
}

// Largest |a_i − b_i| / max|b| over the eigenvalues of two spectra of one
// point, both sorted by descending real part (conjugates folded).
double Difference(const Spectrum& a, const Spectrum& b) {
  double scale = 0, worst = 0;
  for (const auto& v : b.eigenvalues) scale = std::max(scale, std::abs(v));
  const size_t n = std::min(a.eigenvalues.size(), b.eigenvalues.size());
  for (size_t i = 0; i < n; ++i) {
    const std::complex<double> u(a.eigenvalues[i].real(), std::abs(a.eigenvalues[i].imag()));
    const std::complex<double> v(b.eigenvalues[i].real(), std::abs(b.eigenvalues[i].imag()));
    worst = std::max(worst, std::abs(u - v) / scale);
  }
  return a.eigenvalues.size() == b.eigenvalues.size() ? worst : 1.0;
}

bool SameVerdictFields(const Spectrum& a, const Spectrum& b) {
  return a.summary.positive_count == b.summary.positive_count &&
         a.summary.flat_count == b.summary.flat_count &&
         std::abs(a.summary.max_kappa - b.summary.max_kappa) <=
             1e-3 * std::abs(b.summary.max_kappa);
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir = "checkpoints/mnist39";
  int64_t points = 8, t = 20, label = 9;
  int threads = 0;
  std::vector<int64_t> groups = {1, 2, 4, 8};
  ArnoldiOptions arnoldi;
  arnoldi.tolerance = kVerdictGradeTolerance;
  CLI::App app{"matrix-free spectra in lockstep groups against one at a time"};
  app.add_option("--model", model_dir, "model directory")->capture_default_str();
  app.add_option("--points", points, "points (states at t of seeds 0..points-1)")
      ->capture_default_str();
  app.add_option("--groups", groups, "lockstep group sizes")->delimiter(',');
  app.add_option("-t", t, "training timestep")->capture_default_str();
  app.add_option("--label", label, "class label (ignored by unconditional models)")
      ->capture_default_str();
  app.add_option("-k,--eigenvalues", arnoldi.num_eigenvalues, "k")->capture_default_str();
  app.add_option("--tolerance", arnoldi.tolerance, "relative tolerance")->capture_default_str();
  app.add_option("--threads", threads, "LibTorch intra-op threads (0: default)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  ConfigureTorchRuntime(threads);

  auto checkpoint = LoadModel(model_dir);
  if (!checkpoint.ok()) {
    std::fprintf(stderr, "%s\n", std::string(checkpoint.status().message()).c_str());
    return 1;
  }
  Denoiser denoiser(*checkpoint);
  std::vector<uint64_t> seeds(points);
  for (int64_t i = 0; i < points; ++i) seeds[i] = static_cast<uint64_t>(i);
  at::Tensor labels =
      (*checkpoint)->conditional() ? at::full({points}, label, at::kLong) : at::Tensor();
  auto trajectory = SampleTrajectories(denoiser, seeds, labels, SamplerOptions{});
  if (!trajectory.ok()) return 1;
  auto x = StateAtTimestep(denoiser, *trajectory, t, labels, 1.0);
  auto field = denoiser.ScoreField(t, ScoreKind::kConditional, labels);
  if (!x.ok() || !field.ok()) return 1;
  const at::Tensor rows = at::arange(points, at::kLong);
  const int64_t d = (*checkpoint)->sample_numel();
  std::printf("model %s, d = %lld, %lld points, t = %lld, k = %lld, tolerance %.0e, threads %d\n",
              model_dir.c_str(), static_cast<long long>(d), static_cast<long long>(points),
              static_cast<long long>(t), static_cast<long long>(arnoldi.num_eigenvalues),
              arnoldi.tolerance, at::get_num_threads());

  // Warm-up: one spectrum, not timed.
  if (!MatrixFreeSpectrum(*field, x->narrow(0, 0, 1), rows.narrow(0, 0, 1), t, denoiser.schedule(),
                          arnoldi)
           .ok()) {
    return 1;
  }
  // One after another: the reference for time and eigenvalues.
  std::vector<Spectrum> sequential;
  const auto start = std::chrono::steady_clock::now();
  int64_t sequential_vectors = 0;
  for (int64_t i = 0; i < points; ++i) {
    auto spectrum = MatrixFreeSpectrum(*field, x->narrow(0, i, 1), rows.narrow(0, i, 1), t,
                                       denoiser.schedule(), arnoldi);
    if (!spectrum.ok()) {
      std::fprintf(stderr, "%s\n", std::string(spectrum.status().message()).c_str());
      return 1;
    }
    sequential_vectors += spectrum->matvecs;
    sequential.push_back(*std::move(spectrum));
  }
  const double sequential_seconds = Since(start) / points;
  std::printf("one at a time: %.3f s per spectrum, %.0f network calls (= vectors) per spectrum\n",
              sequential_seconds, static_cast<double>(sequential_vectors) / points);
  std::printf("%6s %12s %10s %16s %18s %10s %14s %12s\n", "B", "s/spectrum", "ratio",
              "calls/spectrum", "vectors/spectrum", "forwards", "max |diff|", "verdicts");
  int status = 0;
  for (int64_t group : groups) {
    if (group < 1) continue;
    std::vector<Spectrum> spectra;
    int64_t calls = 0, vectors = 0, forwards = 0;
    for (int64_t first = 0; first < points; first += group) {
      const int64_t count = std::min(group, points - first);
      // The call counts (MatrixFreeSpectra does not report them): the
      // k-window and the scale as it solves them, untimed.
      auto window = LockstepArnoldiEigenvalues(*field, x->narrow(0, first, count),
                                               rows.narrow(0, first, count), arnoldi);
      ArnoldiOptions steepest = arnoldi;
      steepest.target = EigenTarget::kLargestMagnitude;
      steepest.num_eigenvalues = 1;
      steepest.tolerance = std::max(arnoldi.tolerance, 1e-3);
      auto scale = LockstepArnoldiEigenvalues(*field, x->narrow(0, first, count),
                                              rows.narrow(0, first, count), steepest);
      if (!window.ok() || !scale.ok()) return 1;
      calls += window->network_calls + scale->network_calls;
      forwards += window->forward_passes + scale->forward_passes;
    }
    // The spectra themselves, by the production entry point, timed.
    const auto again = std::chrono::steady_clock::now();
    for (int64_t first = 0; first < points; first += group) {
      const int64_t count = std::min(group, points - first);
      auto computed =
          MatrixFreeSpectra(*field, x->narrow(0, first, count), rows.narrow(0, first, count), t,
                            denoiser.schedule(), arnoldi);
      if (!computed.ok()) {
        std::fprintf(stderr, "%s\n", std::string(computed.status().message()).c_str());
        return 1;
      }
      for (Spectrum& s : *computed) {
        vectors += s.matvecs;
        spectra.push_back(std::move(s));
      }
    }
    const double seconds = Since(again) / points;
    double worst = 0;
    int64_t same = 0;
    for (int64_t i = 0; i < points; ++i) {
      worst = std::max(worst, Difference(spectra[i], sequential[i]));
      same += SameVerdictFields(spectra[i], sequential[i]) ? 1 : 0;
    }
    std::printf("%6lld %12.3f %10.2f %16.1f %18.1f %10lld %14.2e %9lld/%lld\n",
                static_cast<long long>(group), seconds, seconds / sequential_seconds,
                static_cast<double>(calls) / points, static_cast<double>(vectors) / points,
                static_cast<long long>(forwards), worst, static_cast<long long>(same),
                static_cast<long long>(points));
    std::fflush(stdout);
    if (worst > 1e-3) status = 2;
  }
  std::printf("peak resident memory: %.0f MiB\n", PeakResidentMiB());
  return status;
}
