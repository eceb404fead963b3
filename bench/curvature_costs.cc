// Benchmark: the cost of curvature primitives per model size, in one run.
//   - one JVP and one VJP through the score field (batch 1);
//   - Arnoldi (k eigenvalues, largest real part): wall time divided by
//     (matvecs × JVP time), i.e. the overhead of everything but the
//     network (target ≤ 1.2);
//   - early-metric throughput: conditions per second at n = 4 generations.
//
//   build/bench/memaudit-bench-curvature --repeats 5
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>

#include "core/checkpoint/load_model.h"
#include "core/early/early_metrics.h"
#include "core/runtime/torch_runtime.h"
#include "core/spectra/arnoldi.h"
#include "tools/toy/conv_net.h"
#include "tools/toy/gaussian_mixture.h"
#include "tools/toy/model_directory.h"
#include "tools/toy/toy_mlp.h"

namespace {

using namespace memaudit;

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

double TimeIt(int repeats, const std::function<void()>& body) {
  body();  // warm-up
  std::vector<double> seconds;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    body();
    seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return Median(seconds);
}

v1::ModelConfig Config(const std::string& name, std::vector<int64_t> shape) {
  v1::ModelConfig config;
  config.set_name(name);
  for (int64_t d : shape) config.add_sample_shape(d);
  config.set_prediction_type(v1::EPSILON);
  *config.mutable_noise_schedule() = toy::DefaultSchedule(v1::NoiseSchedule::LINEAR);
  config.mutable_conditioning()->set_kind(v1::Conditioning::NONE);
  return config;
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 5, threads = 0;
  int64_t k = 8;
  std::string work = "/tmp/memaudit-bench-curvature";
  CLI::App app{"cost of JVP, VJP, Arnoldi and early metrics per model size"};
  app.add_option("--repeats", repeats)->capture_default_str();
  app.add_option("--threads", threads)->capture_default_str();
  app.add_option("-k", k, "Arnoldi eigenvalues")->capture_default_str();
  app.add_option("--work", work, "scratch model repository")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  ConfigureTorchRuntime(threads);
  std::filesystem::create_directories(work);

  struct Model {
    std::string name;
    std::vector<int64_t> shape;
    torch::jit::Module module;
  };
  std::vector<Model> models;
  models.push_back({"mlp64", {64}, toy::BuildToyMlp(64, toy::MlpOptions{}, 1)});
  models.push_back({"mlp784", {784}, toy::BuildToyMlp(784, toy::MlpOptions{256, 3, 16}, 1)});
  toy::ConvNetOptions conv;
  models.push_back({"conv4x32", {4, 32, 32}, toy::BuildConvNet(conv, 1)});
  models.push_back({"conv4x64", {4, 64, 64}, toy::BuildConvNet(conv, 1)});

  std::printf("threads %d, repeats %d (median), Arnoldi k = %lld, largest real part, tol 1e-6\n\n",
              at::get_num_threads(), repeats, static_cast<long long>(k));
  std::printf(
      "| model | d | JVP | VJP | retained VJP | Arnoldi | products | Arnoldi / (products x "
      "retained VJP) | early, n=4 (cond/s) |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (Model& m : models) {
    if (!toy::WriteModelDirectory(work, Config(m.name, m.shape), m.module).ok()) return 1;
    auto checkpoint = LoadModel(work + "/" + m.name);
    if (!checkpoint.ok()) {
      std::fprintf(stderr, "%s\n", std::string(checkpoint.status().message()).c_str());
      return 1;
    }
    Denoiser denoiser(*checkpoint);
    const int64_t t = 20;
    Field field = *denoiser.ScoreField(t, ScoreKind::kConditional, at::Tensor());
    at::manual_seed(0);
    at::Tensor x = at::randn((*checkpoint)->BatchShape(1));
    at::Tensor v = at::randn((*checkpoint)->BatchShape(1));
    at::Tensor rows = at::zeros({1}, at::kLong);
    const double jvp = TimeIt(repeats * 4, [&] { (void)Jvp(field, x, rows, v); });
    const double vjp = TimeIt(repeats * 4, [&] { (void)Vjp(field, x, rows, v); });
    // What Arnoldi multiplies by: a backward pass over one kept forward.
    auto transpose = RetainedVjp::Create(field, x, rows);
    if (!transpose.ok()) return 1;
    const double retained = TimeIt(repeats * 4, [&] { (void)transpose->Apply(v); });
    ArnoldiOptions arnoldi;
    arnoldi.num_eigenvalues = k;
    int64_t matvecs = 0;
    const double arnoldi_seconds = TimeIt(repeats, [&] {
      auto result = ArnoldiEigenvalues(field, x, rows, arnoldi);
      matvecs = result.ok() ? result->matvecs : -1;
    });
    EarlyMetricOptions early;
    const double early_seconds = TimeIt(repeats, [&] {
      (void)ComputeEarlyMetrics(denoiser, {1, 2, 3, 4}, at::Tensor(), early);
    });
    std::printf("| %s | %lld | %.2f ms | %.2f ms | %.2f ms | %.3f s | %lld | %.2f | %.1f |\n",
                m.name.c_str(), static_cast<long long>((*checkpoint)->sample_numel()), jvp * 1e3,
                vjp * 1e3, retained * 1e3, arnoldi_seconds, static_cast<long long>(matvecs),
                arnoldi_seconds / (static_cast<double>(matvecs) * retained), 1.0 / early_seconds);
    std::fflush(stdout);
  }
  // Conditional early metrics (Wen + Jeon: one batched JVP pair per step)
  // on an exact class-conditional mixture, 10 classes, d = 784.
  {
    const int64_t d = 784, classes = 10;
    v1::ModelConfig config = Config("gmm784cond", {d});
    config.mutable_conditioning()->set_kind(v1::Conditioning::CLASS_LABEL);
    config.mutable_conditioning()->set_num_classes(classes);
    auto schedule = NoiseSchedule::Create(config.noise_schedule());
    auto module = toy::BuildGaussianMixtureModule(
        toy::RandomGaussianMixture(d, classes, 1, classes), *schedule, v1::EPSILON, classes);
    if (!module.ok() || !toy::WriteModelDirectory(work, config, *module).ok()) return 1;
    auto checkpoint = LoadModel(work + "/gmm784cond");
    if (!checkpoint.ok()) return 1;
    Denoiser denoiser(*checkpoint);
    EarlyMetricOptions early;
    const double seconds = TimeIt(repeats, [&] {
      (void)ComputeEarlyMetrics(denoiser, {1, 2, 3, 4}, at::full({4}, 3, at::kLong), early);
    });
    std::printf(
        "\nconditional early metrics (Wen + Jeon), gmm784cond (exact 10-class mixture, "
        "d = 784), n = 4, K = 1: %.3f s per condition = %.1f conditions/s\n",
        seconds, 1.0 / seconds);
  }
  return 0;
}
