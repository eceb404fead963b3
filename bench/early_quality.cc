// memaudit-bench-early-quality: how well each early metric tells memorized
// conditions from the others, on a model with known memorized conditions.
// For every condition it computes the early metrics of n generations
// (ComputeEarlyMetrics, the code the server runs) and prints, per metric:
//   - ROC AUC and TPR at 1% FPR over conditions (each condition's mean over
//     its n generations) and over single generations (n = 1 each);
//   - the label-free flags the server would raise (robust z ≥ 3.5 among all
//     the conditions measured together): memorized flagged, others flagged.
// The combined "anisotropy" score is computed among the conditions, as the
// server does for a label-free audit (core/early/calibration.h).
//
//   memaudit-bench-early-quality --model checkpoints/textmnist
//       --prompts PROMPTS.jsonl [--generations 4] [--seed 3000] [--steps 1]
//       [--guidance 7.5] [--sampler ddim] [--steps-offset 0] [--json OUT.jsonl]
//   memaudit-bench-early-quality --model DIR --class 0 --class 1 --class 2
//       --memorized-class 1 --generations 64 ...
//
// PROMPTS.jsonl: one {"prompt": "...", "memorized": true|false} per line.
// --json writes one line per condition with every metric's per-generation
// values. Benchmarks are separate commands, never tests.
#include <ATen/ATen.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/checkpoint/load_model.h"
#include "core/checkpoint/text_encoder.h"
#include "core/early/calibration.h"
#include "core/early/early_metrics.h"
#include "core/model/denoiser.h"
#include "core/runtime/torch_runtime.h"

namespace memaudit {
namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "memaudit-bench-early-quality: %s\n", message.c_str());
  return 1;
}

struct Condition {
  std::string label;
  bool memorized = false;
  at::Tensor batch;                                       // n rows of the condition
  std::map<std::string, std::vector<double>> per_sample;  // metric → n values
  std::map<std::string, double> mean;                     // metric → mean
};

// Flags (robust z ≥ kOutlierZThreshold) among all conditions for `metric`.
std::vector<bool> LabelFreeFlags(const std::vector<Condition>& conditions,
                                 const std::string& metric) {
  const EarlyMetric parsed = *ParseEarlyMetric(metric);  // names from the table
  const bool combined = parsed == EarlyMetric::kAnisotropy;
  std::vector<double> means, alignments;
  for (const Condition& c : conditions) {
    means.push_back(c.mean.at(combined ? EarlyMetricName(EarlyMetric::kAnisotropyNorm) : metric));
    if (combined)
      alignments.push_back(c.mean.at(EarlyMetricName(EarlyMetric::kAnisotropyAlignment)));
  }
  const std::vector<double> z = LabelFreeOutlierScores(parsed, means, alignments);
  std::vector<bool> flags(conditions.size(), false);
  for (size_t i = 0; i < z.size(); ++i) flags[i] = z[i] >= kOutlierZThreshold;
  return flags;
}

int Main(int argc, char** argv) {
  CLI::App app{"memaudit-bench-early-quality: early metrics against known memorized conditions"};
  std::string model_dir, prompt_file, json_path, sampler_name = "ddim";
  std::vector<int64_t> classes, memorized_classes;
  int64_t generations = 4, steps = 1, num_steps = 50, steps_offset = 0;
  uint64_t seed = 3000;
  double guidance = 7.5;
  app.add_option("--model", model_dir, "model directory")->required();
  app.add_option("--prompts", prompt_file, "JSONL of {prompt, memorized} (text models)");
  app.add_option("--class", classes, "class labels to measure (class-conditional models)");
  app.add_option("--memorized-class", memorized_classes, "the classes known to be memorized");
  app.add_option("--generations", generations, "n: generations per condition")
      ->capture_default_str();
  app.add_option("--seed", seed, "generation i of every condition uses seed + i")
      ->capture_default_str();
  app.add_option("--steps", steps, "K: the first K sampling steps")->capture_default_str();
  app.add_option("--num-steps", num_steps, "sampling steps")->capture_default_str();
  app.add_option("--steps-offset", steps_offset, "diffusers' steps_offset")->capture_default_str();
  app.add_option("--guidance", guidance, "classifier-free guidance")->capture_default_str();
  app.add_option("--sampler", sampler_name, "ddim | ddpm")->capture_default_str();
  app.add_option("--json", json_path, "write one JSON line per condition here");
  CLI11_PARSE(app, argc, argv);
  ConfigureTorchRuntime();

  auto checkpoint = LoadModel(model_dir);
  if (!checkpoint.ok()) return Fail(std::string(checkpoint.status().message()));
  Denoiser denoiser(*checkpoint);
  auto sampler_kind = ParseSamplerKind(sampler_name);
  if (!sampler_kind.ok()) return Fail(std::string(sampler_kind.status().message()));

  std::vector<Condition> conditions;
  if (!prompt_file.empty()) {
    const TextEncoder* encoder = (*checkpoint)->text_encoder();
    if (encoder == nullptr) return Fail("--prompts: the model has no text encoder");
    std::ifstream in(prompt_file);
    if (!in) return Fail("--prompts: cannot read " + prompt_file);
    std::vector<std::string> prompts;
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      const nlohmann::json entry = nlohmann::json::parse(line, nullptr, false);
      if (entry.is_discarded() || !entry.contains("prompt")) {
        return Fail("--prompts: not a {\"prompt\", \"memorized\"} line: " + line);
      }
      Condition c;
      c.label = entry["prompt"].get<std::string>();
      c.memorized = entry.value("memorized", false);
      prompts.push_back(c.label);
      conditions.push_back(std::move(c));
    }
    auto encoded = encoder->Encode(prompts);
    if (!encoded.ok()) return Fail(std::string(encoded.status().message()));
    for (size_t i = 0; i < conditions.size(); ++i) {
      std::vector<int64_t> repeat(encoded->dim(), 1);
      repeat[0] = generations;
      conditions[i].batch = encoded->narrow(0, static_cast<int64_t>(i), 1).repeat(repeat);
    }
  } else {
    for (int64_t k : classes) {
      Condition c;
      c.label = "class " + std::to_string(k);
      c.memorized = std::find(memorized_classes.begin(), memorized_classes.end(), k) !=
                    memorized_classes.end();
      c.batch = at::full({generations}, k, at::kLong);
      conditions.push_back(std::move(c));
    }
  }
  if (conditions.empty()) return Fail("give --prompts or --class");

  EarlyMetricOptions options;
  options.sampler.kind = *sampler_kind;
  options.sampler.num_steps = num_steps;
  options.sampler.steps_offset = steps_offset;
  options.sampler.guidance = guidance;
  options.steps = steps;
  std::vector<uint64_t> seeds(generations);
  for (int64_t i = 0; i < generations; ++i) seeds[i] = seed + static_cast<uint64_t>(i);
  std::vector<std::string> metric_names;
  for (const EarlyMetricInfo& info : AllEarlyMetrics()) {
    if (info.conditional) metric_names.push_back(info.name);
  }
  const auto start = std::chrono::steady_clock::now();
  int64_t alignment_timestep = -1;
  for (Condition& c : conditions) {
    auto metrics = ComputeEarlyMetrics(denoiser, seeds, c.batch, options);
    if (!metrics.ok()) return Fail(c.label + ": " + std::string(metrics.status().message()));
    if (!metrics->conditional) return Fail(c.label + ": not a real condition of the model");
    alignment_timestep = metrics->alignment_timestep;
    for (const EarlyMetricInfo& info : AllEarlyMetrics()) {
      if (!info.conditional || info.among_conditions) continue;
      c.per_sample[info.name] = EarlyMetricValues(*metrics, info.metric);
      c.mean[info.name] = Mean(c.per_sample[info.name]);
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // The combined score, per condition (among conditions) and per generation
  // (among all generations, each as its own condition).
  {
    std::vector<double> norms, alignments, sample_norms, sample_alignments;
    const char* norm = EarlyMetricName(EarlyMetric::kAnisotropyNorm);
    const char* alignment = EarlyMetricName(EarlyMetric::kAnisotropyAlignment);
    for (const Condition& c : conditions) {
      norms.push_back(c.mean.at(norm));
      alignments.push_back(c.mean.at(alignment));
      for (double v : c.per_sample.at(norm)) sample_norms.push_back(v);
      for (double v : c.per_sample.at(alignment)) sample_alignments.push_back(v);
    }
    const std::vector<double> combined = AnisotropyScores(norms, alignments);
    const std::vector<double> sample_combined = AnisotropyScores(sample_norms, sample_alignments);
    size_t s = 0;
    for (size_t i = 0; i < conditions.size(); ++i) {
      Condition& c = conditions[i];
      const char* name = EarlyMetricName(EarlyMetric::kAnisotropy);
      c.mean[name] = combined.empty() ? 0.0 : combined[i];
      for (int64_t g = 0; g < generations; ++g, ++s) {
        c.per_sample[name].push_back(sample_combined.empty() ? 0.0 : sample_combined[s]);
      }
    }
  }

  int64_t memorized_count = 0;
  for (const Condition& c : conditions) memorized_count += c.memorized ? 1 : 0;
  std::printf(
      "model %s: %zu conditions (%lld memorized), n = %lld, K = %lld, seeds %llu+, guidance %g, "
      "%s, %lld steps, steps_offset %lld; alignment at t = %lld; %.1f s\n",
      model_dir.c_str(), conditions.size(), static_cast<long long>(memorized_count),
      static_cast<long long>(generations), static_cast<long long>(steps),
      static_cast<unsigned long long>(seed), guidance, sampler_name.c_str(),
      static_cast<long long>(num_steps), static_cast<long long>(steps_offset),
      static_cast<long long>(alignment_timestep), seconds);
  std::printf(
      "| metric | AUC (conditions) | TPR@1%%FPR (conditions) | AUC (generations) | "
      "TPR@1%%FPR (generations) | label-free: memorized flagged | others flagged |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (const std::string& name : metric_names) {
    std::vector<double> pos, neg, sample_pos, sample_neg;
    for (const Condition& c : conditions) {
      (c.memorized ? pos : neg).push_back(c.mean.at(name));
      for (double v : c.per_sample.at(name)) (c.memorized ? sample_pos : sample_neg).push_back(v);
    }
    const RocSummary roc = ComputeRoc(pos, neg, /*higher_is_memorized=*/true);
    const RocSummary sample_roc = ComputeRoc(sample_pos, sample_neg, true);
    const std::vector<bool> flags = LabelFreeFlags(conditions, name);
    int64_t flagged_memorized = 0, flagged_other = 0;
    for (size_t i = 0; i < conditions.size(); ++i) {
      if (!flags[i]) continue;
      (conditions[i].memorized ? flagged_memorized : flagged_other) += 1;
    }
    std::printf("| %s | %.3f | %.2f | %.3f | %.2f | %lld/%lld | %lld/%lld |\n", name.c_str(),
                roc.auc, roc.tpr_at_1pct_fpr, sample_roc.auc, sample_roc.tpr_at_1pct_fpr,
                static_cast<long long>(flagged_memorized), static_cast<long long>(pos.size()),
                static_cast<long long>(flagged_other), static_cast<long long>(neg.size()));
  }
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    for (const Condition& c : conditions) {
      nlohmann::json line = {{"label", c.label}, {"memorized", c.memorized}};
      for (const auto& [name, values] : c.per_sample) line[name] = values;
      out << line.dump() << "\n";
    }
  }
  return 0;
}

}  // namespace
}  // namespace memaudit

int main(int argc, char** argv) { return memaudit::Main(argc, argv); }
