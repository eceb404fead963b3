// Benchmark: memaudit's spectrum against the Python peer a researcher would
// write, on the same checkpoint and the same points, in one run. Checks that
// the eigenvalues agree (sorted, relative to max|λ|) and reports the
// wall-time ratio per spectrum.
//   --method dense    bench/peer_spectrum.py: torch.autograd.functional.jacobian
//                     (vectorize=True), then torch.linalg.eigvals
//   --method arnoldi  bench/peer_arnoldi.py: scipy's ARPACK (eigs) over a
//                     LinearOperator of JVPs, the same k, target (largest
//                     real part), tolerance and subspace size; also the JVP
//                     counts
//
//   build/bench/memaudit-bench-peer --model checkpoints/mnist39 --label 9 --points 5
//   build/bench/memaudit-bench-peer --model checkpoints/mnist39 --label 9 --points 5 \
//       --method arnoldi -k 8
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <complex>
#include <cstdio>
#include <filesystem>

#include "arnoldi.h"
#include "curvature.h"
#include "sampler.h"
#include "spectrum.h"
#include "tensor_file.h"
#include "torch_runtime.h"

namespace {

using namespace memaudit;

std::vector<std::complex<double>> Sorted(const at::Tensor& values) {
  at::Tensor c = values.to(at::kComplexDouble).contiguous();
  const auto* data = c.data_ptr<c10::complex<double>>();
  std::vector<std::complex<double>> out;
  for (int64_t i = 0; i < c.numel(); ++i) out.emplace_back(data[i].real(), data[i].imag());
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.real() != b.real() ? a.real() > b.real() : a.imag() > b.imag();
  });
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir = "checkpoints/mnist39", work = "/tmp/memaudit-bench-peer";
  int64_t label = 9, points = 5, t = 20;
  double guidance = 5.0;
  int threads = 0;
  int64_t chunk_rows = JacobianOptions{}.chunk_rows;
  std::string method = "dense";
  ArnoldiOptions arnoldi;
  CLI::App app{"memaudit dense spectrum vs the Python peer"};
  app.add_option("--model", model_dir)->capture_default_str();
  app.add_option("--label", label)->capture_default_str();
  app.add_option("--points", points)->capture_default_str();
  app.add_option("--t", t)->capture_default_str();
  app.add_option("--guidance", guidance)->capture_default_str();
  app.add_option("--threads", threads)->capture_default_str();
  app.add_option("--work", work)->capture_default_str();
  app.add_option("--chunk-rows", chunk_rows, "Jacobian rows per network call")
      ->capture_default_str();
  app.add_option("--method", method, "dense | arnoldi")
      ->check(CLI::IsMember({"dense", "arnoldi"}))
      ->capture_default_str();
  app.add_option("-k,--eigenvalues", arnoldi.num_eigenvalues, "arnoldi: k")->capture_default_str();
  app.add_option("--tolerance", arnoldi.tolerance, "arnoldi: relative tolerance")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const bool dense = method == "dense";
  ConfigureTorchRuntime(threads);
  std::filesystem::create_directories(work);

  auto checkpoint = Checkpoint::Load(model_dir);
  if (!checkpoint.ok()) {
    std::fprintf(stderr, "%s\n", std::string(checkpoint.status().message()).c_str());
    return 1;
  }
  Denoiser denoiser(*checkpoint);
  // The points: states at t on guided trajectories of seeds 0..points-1.
  std::vector<uint64_t> seeds(points);
  for (int64_t i = 0; i < points; ++i) seeds[i] = static_cast<uint64_t>(i);
  SamplerOptions sampler;
  sampler.guidance = guidance;
  at::Tensor labels = at::full({points}, label, at::kLong);
  auto trajectory = SampleTrajectories(denoiser, seeds, labels, sampler);
  if (!trajectory.ok()) return 1;
  auto x = StateAtTimestep(denoiser, *trajectory, t, labels, guidance);
  if (!x.ok()) return 1;
  const std::string points_path = work + "/points.pt", peer_path = work + "/peer.pt";
  if (!SaveTensorFile(points_path, *x).ok()) return 1;

  // memaudit: one spectrum per point, timed (the first warms up).
  auto field = denoiser.ScoreField(t, ScoreKind::kConditional, labels);
  std::vector<double> seconds, matvecs;
  std::vector<at::Tensor> ours;
  for (int64_t i = 0; i < points; ++i) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::complex<double>> eigenvalues;
    if (dense) {
      JacobianOptions jacobian_options;
      jacobian_options.chunk_rows = chunk_rows;
      auto jacobian =
          DenseJacobians(*field, x->narrow(0, i, 1), at::full({1}, i, at::kLong), jacobian_options);
      auto spectra = DenseSpectra(*jacobian, t, denoiser.schedule());
      eigenvalues = spectra->front().eigenvalues;
    } else {
      auto result =
          ArnoldiEigenvalues(*field, x->narrow(0, i, 1), at::full({1}, i, at::kLong), arnoldi);
      if (!result.ok()) {
        std::fprintf(stderr, "%s\n", std::string(result.status().message()).c_str());
        return 1;
      }
      eigenvalues = result->eigenvalues;
      matvecs.push_back(static_cast<double>(result->matvecs));
    }
    seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    std::vector<c10::complex<double>> values;
    for (const auto& v : eigenvalues) values.emplace_back(v.real(), v.imag());
    ours.push_back(at::tensor(at::ArrayRef<c10::complex<double>>(values)));
  }
  std::vector<double> timed(seconds.begin() + (points > 1 ? 1 : 0), seconds.end());
  std::sort(timed.begin(), timed.end());
  const double memaudit_seconds = timed[timed.size() / 2];

  // The peer, same points, same run.
  const std::string common_args = model_dir + " " + points_path + " " + std::to_string(t) + " " +
                                  std::to_string(denoiser.schedule().sigma(t)) + " " +
                                  std::to_string(label) + " ";
  const std::string command =
      dense ? "/usr/bin/python3 bench/peer_spectrum.py " + common_args + peer_path
            : "/usr/bin/python3 bench/peer_arnoldi.py " + common_args +
                  std::to_string(arnoldi.num_eigenvalues) + " " +
                  std::to_string(arnoldi.tolerance) + " " + peer_path;
  FILE* pipe = popen(command.c_str(), "r");
  char line[256] = {0};
  double peer_seconds = -1, peer_matvecs = -1;
  char peer_jvp[64] = "";
  while (pipe && fgets(line, sizeof(line), pipe)) {
    std::sscanf(line, "seconds_per_spectrum %lf", &peer_seconds);
    std::sscanf(line, "matvecs_per_spectrum %lf", &peer_matvecs);
    std::sscanf(line, "jvp %63s", peer_jvp);
  }
  if (!pipe || pclose(pipe) != 0 || peer_seconds < 0) {
    std::fprintf(stderr, "the Python peer failed: %s\n", command.c_str());
    return 1;
  }
  // Ours next to the peer's, for a closer look: <work>/ours.pt, [points, k].
  if (!dense && !SaveTensorFile(work + "/ours.pt", at::stack(ours)).ok()) return 1;
  auto peer = LoadTensorFile(peer_path);
  if (!peer.ok()) return 1;
  double worst = 0;
  for (int64_t i = 0; i < points; ++i) {
    auto a = Sorted(ours[i]), b = Sorted((*peer)[i]);
    double scale = 0;
    for (const auto& v : b) scale = std::max(scale, std::abs(v));
    if (a.size() != b.size()) {
      std::printf("point %lld: memaudit found %zu eigenvalues, the peer %zu\n",
                  static_cast<long long>(i), a.size(), b.size());
    }
    // The spectrum of a real matrix is closed under conjugation; when the
    // k-th eigenvalue found is half of a pair, either half is right, so the
    // comparison is of real parts and |imaginary| parts.
    for (size_t k = 0; k < std::min(a.size(), b.size()); ++k) {
      const std::complex<double> folded_a(a[k].real(), std::abs(a[k].imag()));
      const std::complex<double> folded_b(b[k].real(), std::abs(b[k].imag()));
      worst = std::max(worst, std::abs(folded_a - folded_b) / scale);
    }
  }
  std::printf("model %s, class %lld, t = %lld, %lld points, d = %lld, threads %d\n",
              model_dir.c_str(), static_cast<long long>(label), static_cast<long long>(t),
              static_cast<long long>(points), static_cast<long long>((*checkpoint)->sample_numel()),
              at::get_num_threads());
  std::printf("eigenvalues: max |ours - peer| / max|lambda| = %.2e (%s 1e-3)\n", worst,
              worst <= 1e-3 ? "within" : "NOT within");
  if (!dense) {
    std::sort(matvecs.begin(), matvecs.end());
    std::printf(
        "arnoldi: k = %lld, largest real part, tolerance %.0e; JVPs per spectrum: "
        "memaudit %.0f, peer %.0f (peer JVP: %s)\n",
        static_cast<long long>(arnoldi.num_eigenvalues), arnoldi.tolerance,
        matvecs[matvecs.size() / 2], peer_matvecs, peer_jvp);
  }
  std::printf("memaudit %-7s spectrum: %.3f s (median)\n", method.c_str(), memaudit_seconds);
  std::printf("Python peer             : %.3f s (median)\n", peer_seconds);
  std::printf("memaudit / peer         : %.2f\n", memaudit_seconds / peer_seconds);
  return worst <= 1e-3 ? 0 : 2;
}
