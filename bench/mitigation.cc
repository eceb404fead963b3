// Benchmark: the guard against copying (core/mitigation.h) on a model with a
// reference set (issue #14 item 3). For one condition and seeds, samples
// from the seeds' own x_T and from x_T mitigated with each step budget, and
// prints per budget: copies (nearest-neighbour truth: a copy of a training
// item that is duplicated), mean first-step sharpness before and after, how
// far x_T moved (‖Δx_T‖/‖x_T‖), mean distance of the samples to their
// nearest training item, and seconds of guard per generation.
//
//   build/bench/memaudit-bench-mitigation --model checkpoints/mnist39 --class 9 --seeds 16
#include <ATen/ATen.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "checkpoint.h"
#include "mitigation.h"
#include "reference_set.h"
#include "sharpness_gradient.h"
#include "torch_runtime.h"

int main(int argc, char** argv) {
  using namespace memaudit;
  std::string model_dir = "checkpoints/mnist39";
  int64_t label = 9, count = 16;
  uint64_t first_seed = 3000;
  std::vector<int64_t> budgets = {0, 5, 10, 20, 40};
  double step_size = 0.05;
  int threads = 0;
  CLI::App app{"copies before and after the sharpness-aware initial-noise guard"};
  app.add_option("--model", model_dir)->capture_default_str();
  app.add_option("--class", label)->capture_default_str();
  app.add_option("--seeds", count)->capture_default_str();
  app.add_option("--first-seed", first_seed)->capture_default_str();
  app.add_option("--budgets", budgets, "gradient-step budgets")->capture_default_str();
  app.add_option("--step-size", step_size)->capture_default_str();
  app.add_option("--threads", threads)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  ConfigureTorchRuntime(threads);

  auto checkpoint = Checkpoint::Load(model_dir);
  if (!checkpoint.ok()) {
    std::fprintf(stderr, "%s\n", std::string(checkpoint.status().message()).c_str());
    return 1;
  }
  std::vector<int64_t> shape((*checkpoint)->config().sample_shape().begin(),
                             (*checkpoint)->config().sample_shape().end());
  auto reference = ReferenceSet::Load(model_dir + "/reference.pt", shape);
  if (!reference.ok()) {
    std::fprintf(stderr, "%s\n", std::string(reference.status().message()).c_str());
    return 1;
  }
  Denoiser denoiser(*checkpoint);
  std::vector<uint64_t> seeds;
  for (int64_t i = 0; i < count; ++i) seeds.push_back(first_seed + static_cast<uint64_t>(i));
  const at::Tensor conditions = at::full({count}, label, at::kLong);
  SamplerOptions sampler;  // DDIM, 50 steps, the model's conditional score
  const at::Tensor x_T = InitialNoise(**checkpoint, seeds);

  std::printf("model %s, class %lld, seeds %llu..%llu, DDIM %lld steps, step size %.3f\n\n",
              (*checkpoint)->config().name().c_str(), static_cast<long long>(label),
              static_cast<unsigned long long>(first_seed),
              static_cast<unsigned long long>(first_seed + count - 1),
              static_cast<long long>(sampler.num_steps), step_size);
  std::printf(
      "| gradient steps | copies | sharpness before | after | moved |dx_T|/|x_T| | mean d1 | guard "
      "s per generation |\n|---|---|---|---|---|---|---|\n");
  for (int64_t budget : budgets) {
    MitigationOptions options;
    options.sampler = sampler;
    options.max_steps = budget;
    options.step_size = step_size;
    const auto begin = std::chrono::steady_clock::now();
    auto mitigated = MitigateInitialNoise(denoiser, x_T, conditions, options);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
    if (!mitigated.ok()) {
      std::fprintf(stderr, "%s\n", std::string(mitigated.status().message()).c_str());
      return 1;
    }
    SamplerOptions from = sampler;
    from.keep_states = false;
    from.initial_state = mitigated->x_T;
    auto samples = SampleTrajectories(denoiser, seeds, conditions, from);
    if (!samples.ok()) return 1;
    const std::vector<NearestNeighbor> truth = reference->Nearest(samples->final_sample.cpu());
    int64_t copies = 0;
    double d1 = 0, before = 0, after = 0, moved = 0;
    for (int64_t b = 0; b < count; ++b) {
      copies += truth[b].is_copy() && truth[b].multiplicity > 1 ? 1 : 0;
      d1 += truth[b].d1 / static_cast<double>(count);
      before += mitigated->before[b] / static_cast<double>(count);
      after += mitigated->after[b] / static_cast<double>(count);
      moved += ((mitigated->x_T[b] - x_T[b]).norm() / x_T[b].norm()).item<double>() /
               static_cast<double>(count);
    }
    std::printf("| %lld | %lld/%lld | %.4g | %.4g | %.3f | %.3f | %.2f |\n",
                static_cast<long long>(budget), static_cast<long long>(copies),
                static_cast<long long>(count), before, after, moved, d1,
                seconds / static_cast<double>(count));
    std::fflush(stdout);
  }
  return 0;
}
