// memaudit-zoo-eval: measures one zoo model against nearest-neighbour truth
// (bench/zoo/README.md). For each condition and seed it samples, takes the
// spectrum at the default evaluation step, and writes one JSON line per
// sample: the spectrum's statistics, the default verdict with and without
// the model's reference set, the truth, and the sample's first-step early
// metrics. bench/zoo/summarize.py turns the lines into the zoo table.
//
//   memaudit-zoo-eval --model DIR [--class K ...] [--samples N] [--seed S]
//                     [--sampler ddim|ddpm] [--steps 50] [--kappas] > out.jsonl
#include <ATen/ATen.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "checkpoint.h"
#include "denoiser.h"
#include "early_metrics.h"
#include "reference_set.h"
#include "sample_curvature.h"
#include "torch_runtime.h"
#include "verdict.h"

namespace memaudit {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "memaudit-zoo-eval: %s\n", std::string(status.message()).c_str());
  return 1;
}

nlohmann::json Finite(double value) {
  return std::isfinite(value) ? nlohmann::json(value) : nlohmann::json(nullptr);
}

}  // namespace

int Main(int argc, char** argv) {
  CLI::App app{"memaudit-zoo-eval: one zoo model's per-sample statistics and truth"};
  std::string model_dir, sampler = "ddim", label;
  std::vector<int64_t> classes;
  int64_t samples = 16, steps = 50;
  uint64_t seed = 1000;
  double guidance = 1.0;
  bool kappas = false;
  int threads = 0;
  app.add_option("--model", model_dir, "model directory")->required();
  app.add_option("--label", label, "name to print (default: the directory name)");
  app.add_option("--class", classes, "class labels to audit (CLASS_LABEL models)");
  app.add_option("--samples", samples, "samples per condition")->capture_default_str();
  app.add_option("--seed", seed, "first seed (sample i uses seed + i)")->capture_default_str();
  app.add_option("--sampler", sampler)
      ->check(CLI::IsMember({"ddim", "ddpm"}))
      ->capture_default_str();
  app.add_option("--steps", steps, "sampling steps")->capture_default_str();
  app.add_option("--guidance", guidance)->capture_default_str();
  app.add_flag("--kappas", kappas, "include every normalized curvature κ_i");
  app.add_option("--threads", threads, "intra-op threads (0: all cores)");
  CLI11_PARSE(app, argc, argv);
  ConfigureTorchRuntime(threads);

  auto checkpoint = Checkpoint::Load(model_dir);
  if (!checkpoint.ok()) return Fail(checkpoint.status());
  const v1::ModelConfig& config = (*checkpoint)->config();
  if (label.empty()) label = config.name();
  const std::vector<int64_t> shape(config.sample_shape().begin(), config.sample_shape().end());
  auto reference = ReferenceSet::Load(
      (std::filesystem::path(model_dir) / ReferenceSet::kFileName).string(), shape);
  if (!reference.ok()) return Fail(reference.status());
  const ResolvedPolicy with_reference = ResolvePolicy(config.verdict_policy(), &*reference);
  const ResolvedPolicy without_reference = ResolvePolicy(config.verdict_policy(), nullptr);
  Denoiser denoiser(*checkpoint);

  SampleCurvatureOptions options;
  options.sampler.kind = sampler == "ddpm" ? SamplerKind::kDdpm : SamplerKind::kDdim;
  options.sampler.num_steps = steps;
  options.sampler.guidance = guidance;
  EarlyMetricOptions early;
  early.sampler = options.sampler;
  early.steps = 1;

  std::vector<int64_t> conditions = classes;
  const bool labelled = config.conditioning().kind() == v1::Conditioning::CLASS_LABEL;
  if (!labelled) conditions = {-1};
  for (int64_t condition : conditions) {
    std::vector<uint64_t> seeds(samples);
    for (int64_t i = 0; i < samples; ++i) seeds[i] = seed + static_cast<uint64_t>(i);
    at::Tensor labels;
    if (labelled) labels = at::full({samples}, condition, at::kLong);
    auto measured = MeasureSamples(denoiser, seeds, labels, options, &*reference);
    if (!measured.ok()) return Fail(measured.status());
    auto metrics = ComputeEarlyMetrics(denoiser, seeds, labels, early);
    if (!metrics.ok()) return Fail(metrics.status());
    for (int64_t i = 0; i < samples; ++i) {
      const SampleCurvature& sample = (*measured)[i];
      const Spectrum& spectrum = sample.spectra.front();
      const SpectrumSummary& s = spectrum.summary;
      const NearestNeighbor& truth = *sample.truth;
      nlohmann::json line = {
          {"model", label},
          {"condition", condition},
          {"seed", sample.seed},
          {"sampler", sampler},
          {"t", spectrum.t},
          {"sigma", spectrum.sigma},
          {"sqrt_alpha_bar", spectrum.sqrt_alpha_bar},
          {"method", SpectrumMethodName(spectrum.method)},
          {"dimension", (*checkpoint)->sample_numel()},
          {"positive", s.positive_count},
          {"flat", s.flat_count},
          {"max_kappa", s.max_kappa},
          {"min_kappa", s.min_kappa},
          {"mean_kappa", s.mean_kappa},
          {"width", Finite(s.width)},
          {"radius", Finite(s.radius)},
          {"spacing", reference->spacing()},
          {"data_scale", with_reference.data_scale},
          {"truth_ratio", truth.ratio},
          {"truth_d1", truth.d1},
          {"truth_d2", truth.d2},
          {"truth_copy", truth.is_copy()},
          {"multiplicity", truth.multiplicity},
          {"gap", truth.gap},
          {"noise_radius", Finite(s.noise_radius)},
          {"verdict_reference", VerdictName(JudgeSample(s, with_reference, &truth))},
          {"verdict_no_reference", VerdictName(JudgeSample(s, without_reference))},
      };
      if (metrics->conditional) {
        line["wen"] = metrics->wen[i];
        line["jeon"] = metrics->jeon[i];
      } else {
        line["score_norm_squared"] = metrics->score_norm_squared[i];
        line["hessian_score_squared"] = metrics->hessian_score_squared[i];
        line["hutchinson_trace"] = metrics->hutchinson_trace[i];
      }
      if (kappas) {
        std::vector<double> values;
        for (const auto& lambda : spectrum.eigenvalues) {
          values.push_back(spectrum.sigma * spectrum.sigma * lambda.real());
        }
        line["kappas"] = values;
      }
      std::cout << line.dump() << "\n" << std::flush;
    }
    std::fprintf(stderr, "%s: condition %lld: %lld samples done\n", label.c_str(),
                 static_cast<long long>(condition), static_cast<long long>(samples));
  }
  return 0;
}

}  // namespace memaudit

int main(int argc, char** argv) { return memaudit::Main(argc, argv); }
