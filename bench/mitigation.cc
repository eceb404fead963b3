// Benchmark: the guard against copying (core/early/mitigation.h) on a model with a
// reference set (issue #14 item 3). For each condition (a class, or each
// prompt of a file) and seeds, samples from the seeds' own x_T and from x_T
// mitigated with each step budget, and prints per budget, over all
// conditions: copies (nearest-neighbour truth: a copy of a training item
// that is duplicated), mean first-step sharpness before and after, how far
// x_T moved (‖Δx_T‖/‖x_T‖), mean distance of the samples to their nearest
// training item, how many a digit classifier trained by the project
// (checkpoints/digit_classifier) reads as the requested digit, and seconds
// of guard per generation.
//
//   build/bench/memaudit-bench-mitigation --model checkpoints/mnist39 --class 9 --seeds 16
//   build/bench/memaudit-bench-mitigation --model checkpoints/textmnist
//       --prompts checkpoints/textmnist/prompts/memorized.txt --guidance 5 --seeds 4
#include <ATen/ATen.h>

#include <CLI/CLI.hpp>
#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "core/checkpoint/load_model.h"
#include "core/checkpoint/script_module.h"
#include "core/checkpoint/text_encoder.h"
#include "core/early/mitigation.h"
#include "core/early/sharpness_gradient.h"
#include "core/runtime/torch_runtime.h"
#include "core/verdict/reference_set.h"

namespace memaudit {
namespace {

struct BenchCondition {
  std::string label;
  at::Tensor rows;  // the condition for every seed
  int64_t digit;    // the digit it asks for (-1: unknown)
};

// The digit a prompt asks for ("a handwritten seven, ..."): its first
// number word; -1 when there is none.
int64_t DigitOfPrompt(const std::string& prompt) {
  static constexpr std::array<const char*, 10> kWords = {"zero", "one", "two",   "three", "four",
                                                         "five", "six", "seven", "eight", "nine"};
  size_t best = std::string::npos;
  int64_t digit = -1;
  for (int64_t d = 0; d < 10; ++d) {
    const std::string word = std::string(" ") + kWords[d];
    const size_t at = prompt.find(word);
    if (at != std::string::npos && at < best) best = at, digit = d;
  }
  return digit;
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "%s\n", std::string(status.message()).c_str());
  return 1;
}

struct BudgetTotals {
  int64_t generations = 0, copies = 0, classified = 0, read_as_requested = 0;
  std::array<int64_t, 10> readings{};  // the classifier's reading of each generation
  double d1 = 0, before = 0, after = 0, moved = 0, seconds = 0;
};

int Run(int argc, char** argv) {
  std::string model_dir = "checkpoints/mnist39";
  std::string prompts_file, classifier_path = "checkpoints/digit_classifier/classifier.pt";
  int64_t label = 9, count = 16;
  uint64_t first_seed = 3000;
  std::vector<int64_t> budgets = {0, 5, 10, 20, 40};
  double step_size = 0.05, guidance = 1.0;
  int threads = 0;
  CLI::App app{"copies before and after the sharpness-aware initial-noise guard"};
  app.add_option("--model", model_dir)->capture_default_str();
  app.add_option("--class", label, "class label (models with class labels)")->capture_default_str();
  app.add_option("--prompts", prompts_file, "file of prompts, one per line (instead of --class)");
  app.add_option("--guidance", guidance, "classifier-free guidance weight")->capture_default_str();
  app.add_option("--seeds", count, "seeds per condition")->capture_default_str();
  app.add_option("--first-seed", first_seed)->capture_default_str();
  app.add_option("--budgets", budgets, "gradient-step budgets")->capture_default_str();
  app.add_option("--step-size", step_size)->capture_default_str();
  app.add_option("--classifier", classifier_path,
                 "TorchScript digit classifier [B,1,28,28] -> logits [B,10] ('' : none)")
      ->capture_default_str();
  app.add_option("--threads", threads)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  ConfigureTorchRuntime(threads);

  auto checkpoint = LoadModel(model_dir);
  if (!checkpoint.ok()) return Fail(checkpoint.status());
  std::vector<int64_t> shape((*checkpoint)->config().sample_shape().begin(),
                             (*checkpoint)->config().sample_shape().end());
  auto reference = ReferenceSet::Load(model_dir + "/reference.pt", shape);
  if (!reference.ok()) return Fail(reference.status());
  std::optional<ScriptModule> classifier;
  if (!classifier_path.empty()) {
    auto loaded = LoadScriptModule(classifier_path, at::kCPU, at::kFloat);
    if (!loaded.ok()) return Fail(loaded.status());
    classifier = *std::move(loaded);
  }
  Denoiser denoiser(*checkpoint);

  std::vector<BenchCondition> conditions;
  if (prompts_file.empty()) {
    conditions.push_back({"class " + std::to_string(label),
                          at::full({count}, label, at::kLong).to((*checkpoint)->device()), label});
  } else {
    const TextEncoder* encoder = (*checkpoint)->text_encoder();
    if (encoder == nullptr) {
      return Fail(absl::InvalidArgumentError("--prompts: the model has no text encoder"));
    }
    std::ifstream in(prompts_file);
    if (!in) return Fail(absl::NotFoundError(prompts_file + ": cannot read"));
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      auto embedding = encoder->Encode({line});
      if (!embedding.ok()) return Fail(embedding.status());
      std::vector<int64_t> repeats(static_cast<size_t>(embedding->dim()), 1);
      repeats[0] = count;
      conditions.push_back({line, embedding->repeat(repeats), DigitOfPrompt(line)});
    }
  }
  std::vector<uint64_t> seeds;
  for (int64_t i = 0; i < count; ++i) seeds.push_back(first_seed + static_cast<uint64_t>(i));
  SamplerOptions sampler;  // DDIM, 50 steps
  sampler.guidance = guidance;
  const at::Tensor x_T = InitialNoise(**checkpoint, seeds);

  std::printf(
      "model %s, %zu condition(s), seeds %llu..%llu each, DDIM %lld steps, guidance %g, step "
      "size %.3f\n\n",
      (*checkpoint)->config().name().c_str(), conditions.size(),
      static_cast<unsigned long long>(first_seed),
      static_cast<unsigned long long>(first_seed + count - 1),
      static_cast<long long>(sampler.num_steps), guidance, step_size);
  std::printf(
      "| gradient steps | copies | sharpness before | after | moved |dx_T|/|x_T| | mean d1 | "
      "read as the requested digit | guard s per generation |\n"
      "|---|---|---|---|---|---|---|---|\n");
  std::vector<BudgetTotals> all;
  for (int64_t budget : budgets) {
    BudgetTotals totals;
    for (const BenchCondition& condition : conditions) {
      MitigationOptions options;
      options.sampler = sampler;
      options.max_steps = budget;
      options.step_size = step_size;
      const auto begin = std::chrono::steady_clock::now();
      auto mitigated = MitigateInitialNoise(denoiser, x_T, condition.rows, options);
      totals.seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
      if (!mitigated.ok()) return Fail(mitigated.status());
      SamplerOptions from = sampler;
      from.keep_states = false;
      from.initial_state = mitigated->x_T;
      auto samples = SampleTrajectories(denoiser, seeds, condition.rows, from);
      if (!samples.ok()) return Fail(samples.status());
      const at::Tensor final_sample = samples->final_sample.cpu().to(at::kFloat);
      const std::vector<NearestNeighbor> truth = reference->Nearest(final_sample);
      if (classifier && condition.digit >= 0) {
        const at::Tensor logits =
            classifier->module.forward({final_sample.reshape({count, 1, 28, 28})}).toTensor();
        const at::Tensor read = logits.argmax(1);
        totals.read_as_requested += read.eq(condition.digit).sum().item<int64_t>();
        for (int64_t b = 0; b < count; ++b) ++totals.readings[read[b].item<int64_t>()];
        totals.classified += count;
      }
      for (int64_t b = 0; b < count; ++b) {
        totals.copies += truth[b].is_copy() && truth[b].multiplicity > 1 ? 1 : 0;
        totals.d1 += truth[b].d1;
        totals.before += mitigated->before[b];
        totals.after += mitigated->after[b];
        totals.moved += ((mitigated->x_T[b] - x_T[b]).norm() / x_T[b].norm()).item<double>();
      }
      totals.generations += count;
    }
    const double n = static_cast<double>(totals.generations);
    const std::string read = totals.classified > 0 ? std::to_string(totals.read_as_requested) +
                                                         "/" + std::to_string(totals.classified)
                                                   : "-";
    std::printf("| %lld | %lld/%lld | %.4g | %.4g | %.3f | %.3f | %s | %.2f |\n",
                static_cast<long long>(budget), static_cast<long long>(totals.copies),
                static_cast<long long>(totals.generations), totals.before / n, totals.after / n,
                totals.moved / n, totals.d1 / n, read.c_str(), totals.seconds / n);
    std::fflush(stdout);
    all.push_back(totals);
  }
  if (classifier) {
    std::printf("\nthe classifier's readings (digits 0-9) per budget:\n");
    for (size_t i = 0; i < budgets.size(); ++i) {
      std::printf("  %lld steps:", static_cast<long long>(budgets[i]));
      for (int64_t count_of_digit : all[i].readings) {
        std::printf(" %lld", static_cast<long long>(count_of_digit));
      }
      std::printf("\n");
    }
  }
  return 0;
}

}  // namespace
}  // namespace memaudit

int main(int argc, char** argv) { return memaudit::Run(argc, argv); }
