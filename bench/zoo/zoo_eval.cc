// memaudit-zoo-eval: measures one zoo model against nearest-neighbour truth
// (bench/zoo/README.md). For each condition and seed it samples, takes the
// spectrum at the default evaluation step, and writes one JSON line per
// sample: the spectrum's statistics, the default verdict with and without
// the model's reference set, the truth, and the sample's first-step early
// metrics. bench/zoo/summarize.py turns the lines into the zoo table.
//
//   memaudit-zoo-eval --model DIR [--class K ...] [--samples N] [--seed S]
//                     [--sampler ddim|ddpm] [--steps 50] [--steps-offset 0]
//                     [--guidance W] [--kappas] [--variant SPEC ...]
//                     [--dtype float32|bfloat16|float16] > out.jsonl
//
// --dtype runs the networks in that precision (the engine stays float32);
// bench/zoo/precision.py compares two such runs on the same seeds.
// --twin DIR [--twin-dtype D] also measures, at every sample's own evaluation
// point, the spectrum of DIR's network (e.g. the same weights exported in
// bfloat16): "twin_kappas" beside "kappas", the precision's effect on the
// spectrum alone.
//
// --variant adds, per sample, the spectrum at other evaluation points and of
// other fields (the "variants" object of each line), for choosing the
// default (docs/VERDICTS.md):
//   grid        conditional score at the first sampling step with σ_t < 0.1
//   cond@S      conditional score at the trajectory's state moved to the
//               timestep whose σ_t is nearest S (DDIM, sampling guidance)
//   guided@S    the guided field there
//   mode@S      conditional score at the Tweedie step x + σ²·s_c(x) of
//               the cond@S state (the centre of the peak it sits on);
//               modeN@S takes N such steps
//   cont@H@S    conditional score at the state reached by deterministic
//               conditional (guidance 1) DDIM steps from the first sampling
//               step with σ_t < H down to the timestep nearest σ = S
#include <ATen/ATen.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "core/audit/sample_curvature.h"
#include "core/checkpoint/load_model.h"
#include "core/checkpoint/text_encoder.h"
#include "core/early/early_metrics.h"
#include "core/model/denoiser.h"
#include "core/runtime/torch_runtime.h"
#include "core/verdict/reference_set.h"
#include "core/verdict/verdict.h"

namespace memaudit {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "memaudit-zoo-eval: %s\n", std::string(status.message()).c_str());
  return 1;
}

// κ_i = σ_t²·Re λ_i of every eigenvalue found.
std::vector<double> Kappas(const Spectrum& spectrum) {
  std::vector<double> kappas;
  for (const auto& lambda : spectrum.eigenvalues) {
    kappas.push_back(spectrum.sigma * spectrum.sigma * lambda.real());
  }
  return kappas;
}

nlohmann::json Finite(double value) {
  return std::isfinite(value) ? nlohmann::json(value) : nlohmann::json(nullptr);
}

// One --variant: where the state comes from and which field is measured.
struct Variant {
  std::string name;
  enum Kind { kGrid, kConditional, kGuided, kContinued, kMode } kind = kGrid;
  double sigma = 0.0;       // evaluation σ target (not kGrid)
  double from_sigma = 0.0;  // kContinued: start at the first step below this
  int mode_steps = 1;       // kMode: Tweedie steps taken
};

absl::StatusOr<Variant> ParseVariant(const std::string& spec) {
  Variant variant;
  variant.name = spec;
  const std::vector<std::string> parts = absl::StrSplit(spec, '@');
  const auto number = [&](const std::string& text, double* value) {
    return absl::SimpleAtod(text, value) && *value > 0;
  };
  if (parts.size() == 1 && parts[0] == "grid") return variant;
  if (parts.size() == 2 && (parts[0] == "cond" || parts[0] == "guided") &&
      number(parts[1], &variant.sigma)) {
    variant.kind = parts[0] == "cond" ? Variant::kConditional : Variant::kGuided;
    return variant;
  }
  // modeN@S: N Tweedie steps (mode@S: one).
  if (parts.size() == 2 && absl::StartsWith(parts[0], "mode") && number(parts[1], &variant.sigma) &&
      (parts[0].size() == 4 ||
       (absl::SimpleAtoi(parts[0].substr(4), &variant.mode_steps) && variant.mode_steps > 0))) {
    variant.kind = Variant::kMode;
    return variant;
  }
  if (parts.size() == 3 && parts[0] == "cont" && number(parts[1], &variant.from_sigma) &&
      number(parts[2], &variant.sigma)) {
    variant.kind = Variant::kContinued;
    return variant;
  }
  return absl::InvalidArgumentError("--variant \"" + spec +
                                    "\": expected grid, cond@S, guided@S, mode[N]@S or cont@H@S");
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
  std::string prompt_file;
  app.add_option("--prompts", prompt_file, "file of prompts, one per line (text-to-image models)");
  app.add_option("--samples", samples, "samples per condition")->capture_default_str();
  app.add_option("--seed", seed, "first seed (sample i uses seed + i)")->capture_default_str();
  app.add_option("--sampler", sampler)
      ->check(CLI::IsMember({"ddim", "ddpm"}))
      ->capture_default_str();
  app.add_option("--steps", steps, "sampling steps")->capture_default_str();
  app.add_option("--guidance", guidance)->capture_default_str();
  int64_t steps_offset = 0;
  std::vector<std::string> variant_specs;
  app.add_option("--steps-offset", steps_offset, "leading spacing offset (Stable Diffusion: 1)")
      ->capture_default_str();
  app.add_flag("--kappas", kappas, "include every normalized curvature κ_i");
  app.add_option("--variant", variant_specs, "extra evaluation points/fields (see the header)");
  app.add_option("--threads", threads, "intra-op threads (0: all cores)");
  std::string dtype, twin_dir, twin_dtype;
  app.add_option("--dtype", dtype, "networks' precision (default: as saved)");
  app.add_option("--twin", twin_dir, "a second model measured at the same points (see header)");
  app.add_option("--twin-dtype", twin_dtype, "the twin's networks' precision");
  CLI11_PARSE(app, argc, argv);
  ConfigureTorchRuntime(threads);

  CheckpointOptions checkpoint_options;
  auto parsed_dtype = ParseDtype(dtype);
  if (!parsed_dtype.ok()) return Fail(parsed_dtype.status());
  checkpoint_options.dtype = *parsed_dtype;
  auto checkpoint = LoadModel(model_dir, checkpoint_options);
  std::optional<Denoiser> twin;
  if (!twin_dir.empty()) {
    CheckpointOptions twin_options;
    auto parsed_twin = ParseDtype(twin_dtype);
    if (!parsed_twin.ok()) return Fail(parsed_twin.status());
    twin_options.dtype = *parsed_twin;
    auto loaded = LoadModel(twin_dir, twin_options);
    if (!loaded.ok()) return Fail(loaded.status());
    twin.emplace(*loaded);
  }
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
  options.sampler.steps_offset = steps_offset;
  std::vector<Variant> variants;
  for (const std::string& spec : variant_specs) {
    auto variant = ParseVariant(spec);
    if (!variant.ok()) return Fail(variant.status());
    variants.push_back(*variant);
  }
  EarlyMetricOptions early;
  early.sampler = options.sampler;
  early.steps = 1;

  std::vector<int64_t> conditions = classes;
  const bool labelled = config.conditioning().kind() == v1::Conditioning::CLASS_LABEL;
  std::vector<std::string> prompts;
  at::Tensor embeddings;
  if (!prompt_file.empty()) {
    const TextEncoder* encoder = (*checkpoint)->text_encoder();
    if (encoder == nullptr) return Fail(absl::InvalidArgumentError("--prompts: no text encoder"));
    std::ifstream in(prompt_file);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) prompts.push_back(line);
    }
    auto encoded = encoder->Encode(prompts);
    if (!encoded.ok()) return Fail(encoded.status());
    embeddings = *encoded;
    conditions.clear();
    for (size_t i = 0; i < prompts.size(); ++i) conditions.push_back(static_cast<int64_t>(i));
  } else if (!labelled) {
    conditions = {-1};
  }
  for (int64_t condition : conditions) {
    std::vector<uint64_t> seeds(samples);
    for (int64_t i = 0; i < samples; ++i) seeds[i] = seed + static_cast<uint64_t>(i);
    at::Tensor labels;
    if (labelled) labels = at::full({samples}, condition, at::kLong);
    if (embeddings.defined()) {
      std::vector<int64_t> repeat(embeddings.dim(), 1);
      repeat[0] = samples;
      labels = embeddings.narrow(0, condition, 1).repeat(repeat);
    }
    SampleCurvatureOptions measure_options = options;
    measure_options.keep_points = twin.has_value();
    auto measured = MeasureSamples(denoiser, seeds, labels, measure_options, &*reference);
    if (!measured.ok()) return Fail(measured.status());
    std::vector<std::vector<double>> twin_kappas(samples);
    std::vector<std::string> twin_verdicts(samples);
    if (twin.has_value()) {
      auto prepared = twin->PrepareConditions(labels, samples);
      if (!prepared.ok()) return Fail(prepared.status());
      std::vector<at::Tensor> points;
      for (const SampleCurvature& sample : *measured) points.push_back(sample.points.front());
      const int64_t t = measured->front().spectra.front().t;
      auto spectra =
          SpectraAt(*twin, at::stack(points).to((*checkpoint)->dtype()), t, *prepared, options);
      if (!spectra.ok()) return Fail(spectra.status());
      for (int64_t i = 0; i < samples; ++i) {
        twin_kappas[i] = Kappas((*spectra)[i]);
        twin_verdicts[i] =
            VerdictName(JudgeSample((*spectra)[i].summary, with_reference, &*(*measured)[i].truth));
      }
    }
    auto metrics = ComputeEarlyMetrics(denoiser, seeds, labels, early);
    if (!metrics.ok()) return Fail(metrics.status());
    std::vector<nlohmann::json> variant_lines(samples, nlohmann::json::object());
    if (!variants.empty()) {
      auto prepared = denoiser.PrepareConditions(labels, samples);
      if (!prepared.ok()) return Fail(prepared.status());
      auto trajectory = SampleTrajectories(denoiser, seeds, *prepared, options.sampler);
      if (!trajectory.ok()) return Fail(trajectory.status());
      const NoiseSchedule& schedule = denoiser.schedule();
      for (const Variant& variant : variants) {
        int64_t t =
            trajectory->timesteps[FirstStepBelowSigma(trajectory->timesteps, schedule, 0.1)];
        absl::StatusOr<at::Tensor> x;
        at::Tensor last_step, moved;  // kMode
        SampleCurvatureOptions variant_options = options;
        if (variant.kind == Variant::kGrid) {
          x = StateAtTimestep(denoiser, *trajectory, t, *prepared, guidance);
        } else if (variant.kind == Variant::kContinued) {
          t = std::min(schedule.TimestepNearestSigma(variant.sigma), trajectory->timesteps.front());
          const size_t from =
              FirstStepBelowSigma(trajectory->timesteps, schedule, variant.from_sigma);
          x = trajectory->timesteps[from] >= t
                  ? DeterministicStateAt(denoiser, *trajectory, from, t, *prepared, 1.0)
                  : StateAtTimestep(denoiser, *trajectory, t, *prepared, 1.0);
        } else {
          t = std::min(schedule.TimestepNearestSigma(variant.sigma), trajectory->timesteps.front());
          x = StateAtTimestep(denoiser, *trajectory, t, *prepared, guidance);
          if (variant.kind == Variant::kGuided) variant_options.score_kind = ScoreKind::kGuided;
          if (variant.kind == Variant::kMode && x.ok()) {
            // The Tweedie step to the centre of the conditional peak,
            // whatever the guidance (the default centres guided states only).
            const at::Tensor start = *x;
            at::Tensor before = start;
            SampleCurvatureOptions one_step = options;
            one_step.centring_steps = 1;
            for (int step = 0; step < variant.mode_steps && x.ok(); ++step) {
              before = *x;
              x = PeakCentre(denoiser, *x, t, *prepared, one_step);
            }
            if (x.ok()) {
              // Per sample, in units of the noise σ_t·√d: the last step's
              // length and the whole move from the state.
              const double noise = std::sqrt(1.0 - schedule.alpha_bar(t)) *
                                   std::sqrt(static_cast<double>(start[0].numel()));
              const auto norms = [&](const at::Tensor& delta) {
                return (delta.reshape({delta.size(0), -1}).to(at::kDouble).norm(2, 1) / noise)
                    .contiguous();
              };
              last_step = norms(*x - before);
              moved = norms(*x - start);
            }
          }
        }
        if (!x.ok()) return Fail(x.status());
        auto spectra = SpectraAt(denoiser, *x, t, *prepared, variant_options);
        if (!spectra.ok()) return Fail(spectra.status());
        for (int64_t i = 0; i < samples; ++i) {
          const Spectrum& spectrum = (*spectra)[i];
          const SpectrumSummary& v = spectrum.summary;
          const NearestNeighbor& truth = *(*measured)[i].truth;
          nlohmann::json entry = {
              {"t", t},
              {"sigma", spectrum.sigma},
              {"positive", v.positive_count},
              {"max_kappa", v.max_kappa},
              {"min_kappa", v.min_kappa},
              {"radius", Finite(v.radius)},
              {"noise_radius", Finite(v.noise_radius)},
              {"verdict_reference", VerdictName(JudgeSample(v, with_reference, &truth))},
              {"verdict_no_reference", VerdictName(JudgeSample(v, without_reference))},
          };
          if (kappas) {
            entry["kappas"] = Kappas(spectrum);
          }
          if (last_step.defined()) {
            entry["last_step"] = last_step[i].item<double>();
            entry["moved"] = moved[i].item<double>();
          }
          variant_lines[i][variant.name] = entry;
        }
      }
    }
    for (int64_t i = 0; i < samples; ++i) {
      const SampleCurvature& sample = (*measured)[i];
      const Spectrum& spectrum = sample.spectra.front();
      const SpectrumSummary& s = spectrum.summary;
      const NearestNeighbor& truth = *sample.truth;
      nlohmann::json line = {
          {"model", label},
          {"condition", condition},
          {"prompt", prompts.empty() ? std::string() : prompts[condition]},
          {"seed", sample.seed},
          {"sampler", sampler},
          {"network_dtype", DtypeName((*checkpoint)->network_dtype())},
          {"guidance", guidance},
          {"steps_offset", steps_offset},
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
      if (!variants.empty()) line["variants"] = variant_lines[i];
      if (kappas) {
        line["kappas"] = Kappas(spectrum);
      }
      if (twin.has_value()) {
        line["twin_kappas"] = twin_kappas[i];
        line["twin_verdict_reference"] = twin_verdicts[i];
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
