// sample, spectrum, calibrate, early: direct measurements (no jobs).
#include <algorithm>
#include <iostream>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/commands.h"
#include "client/cli/common.h"
#include "client/prompt_files.h"
#include "client/report_format.h"
#include "client/sample_files.h"

namespace memaudit::client::cli {
namespace {

struct SampleFlags {
  SamplingFlags sampling;
  int64_t count = 16;
  uint64_t seed = 0;
  ConditionFlags condition;
  std::string out;
  float low = -1, high = 1;
};

// The samples of `request` (their decoded images when it asks to decode),
// in seed order, through StreamSamples: it has no deadline (a large --count
// may take longer than --timeout) and reports each batch, which the
// progress bar shows on a terminal. Ctrl-C cancels.
absl::StatusOr<std::vector<float>> StreamedSamples(Client& client,
                                                   const v1::SampleRequest& request) {
  CatchInterrupts();
  ProgressBar bar(/*quiet=*/false);
  std::vector<float> values;
  int received = 0;
  absl::Status status = client.StreamSamples(
      request,
      [&](const v1::SampleResponse& response) -> absl::Status {
        if (received == request.seeds_size() || response.seeds_size() != 1 ||
            response.seeds(0) != request.seeds(received)) {
          return absl::InternalError(
              absl::StrCat("the server streamed an unexpected sample after ", received));
        }
        absl::StatusOr<std::vector<float>> sample =
            TensorValues(request.decode() ? response.images() : response.samples());
        if (!sample.ok()) return sample.status();
        values.insert(values.end(), sample->begin(), sample->end());
        bar.Draw(++received, request.seeds_size());
        return absl::OkStatus();
      },
      Interrupted);
  bar.Done();
  if (!status.ok()) return status;
  if (received != request.seeds_size()) {
    return absl::InternalError(
        absl::StrCat("the server streamed ", received, " of ", request.seeds_size(), " samples"));
  }
  return values;
}

int RunSample(const CommonOptions& common, const SampleFlags& flags) {
  // The format is the file name's; a name that is neither is refused before
  // any sampling (not written as .npy under a name that says otherwise).
  if (!flags.out.empty()) {
    if (absl::Status name = CheckSampleFileName("--out", flags.out); !name.ok()) return Fail(name);
  }
  const bool png = absl::EndsWith(flags.out, ".png");
  Client client = common.Connect();
  absl::StatusOr<v1::ModelInfo> info = client.GetModel(flags.sampling.model);
  if (!info.ok()) return Fail(info.status());
  v1::SampleRequest request;
  request.set_model(flags.sampling.model);
  for (int64_t i = 0; i < flags.count; ++i) request.add_seeds(flags.seed + i);
  flags.condition.Fill(request.mutable_condition());
  if (absl::Status s = flags.sampling.Fill(request.mutable_sampling()); !s.ok()) return Fail(s);
  // A latent model's PNG shows the decoded images; .npy keeps the latents.
  request.set_decode(png && info->config().has_latent());
  absl::StatusOr<std::vector<float>> values = StreamedSamples(client, request);
  if (!values.ok()) return Fail(values.status());
  const auto& shape_field =
      request.decode() ? info->config().latent().image_shape() : info->config().sample_shape();
  const std::vector<int64_t> shape(shape_field.begin(), shape_field.end());
  if (flags.out.empty()) {
    const size_t per = values->size() / flags.count;
    for (int64_t i = 0; i < flags.count; ++i) {
      std::cout << "seed " << flags.seed + i << ":";
      for (size_t j = 0; j < std::min<size_t>(per, 16); ++j) {
        std::cout << absl::StrFormat(" %.4f", (*values)[i * per + j]);
      }
      std::cout << (per > 16 ? " ..." : "") << "\n";
    }
    return kExitOk;
  }
  absl::Status written;
  if (png) {
    if (!IsImageShape(shape)) {
      return Fail(absl::InvalidArgumentError(
          "--out .png needs an image-shaped model ([H, W], [1, H, W] or [3, H, W]); use .npy"));
    }
    written = WritePngGrid(flags.out, *values, flags.count, shape, flags.low, flags.high);
  } else {
    std::vector<int64_t> full{flags.count};
    full.insert(full.end(), shape.begin(), shape.end());
    written = WriteNpy(flags.out, *values, full);
  }
  if (!written.ok()) return Fail(written);
  std::cout << "wrote " << flags.count << " samples to " << flags.out << std::endl;
  return kExitOk;
}

struct SpectrumFlags {
  SamplingFlags sampling;
  CurvatureFlags curvature;
  uint64_t seed = 0;
  ConditionFlags condition;
  std::optional<int64_t> timestep;
  int top = 10;
  std::string plot;
  int64_t early_steps = 0;
};

int RunSpectrum(const CommonOptions& common, const SpectrumFlags& flags) {
  v1::SpectrumRequest request;
  request.set_model(flags.sampling.model);
  request.set_seed(flags.seed);
  if (flags.timestep) request.set_timestep(*flags.timestep);
  flags.condition.Fill(request.mutable_condition());
  request.set_early_steps(flags.early_steps);
  if (absl::Status s = flags.sampling.Fill(request.mutable_sampling()); !s.ok()) return Fail(s);
  if (absl::Status s = flags.curvature.Fill(request.mutable_curvature()); !s.ok()) return Fail(s);
  absl::StatusOr<v1::SpectrumResponse> response = common.Connect().Spectrum(request);
  if (!response.ok()) return Fail(response.status());
  PrintResult(common.json, *response, SpectrumJson, [&](const v1::SpectrumResponse& spectrum) {
    return SpectrumText(spectrum, flags.top);
  });
  if (!flags.plot.empty()) {
    const absl::Status written = WriteOutputFile(
        flags.plot, SpectrumSvg(*response, absl::StrFormat("%s, seed %d: curvature spectrum",
                                                           flags.sampling.model, flags.seed)));
    if (!written.ok()) return Fail(written);
    if (!common.json) std::cout << "plot written to " << flags.plot << std::endl;
  }
  return kExitOk;
}

struct CalibrateFlags {
  SamplingFlags sampling;
  std::vector<int64_t> memorized, not_memorized;
  std::string memorized_prompts, not_memorized_prompts;
  bool early_only = false;
  int64_t samples = 16;
  uint64_t seed = 0;
  int64_t early_steps = 0;
};

int RunCalibrate(const CommonOptions& common, const CalibrateFlags& flags) {
  v1::CalibrationRequest request;
  request.set_model(flags.sampling.model);
  for (int64_t label : flags.memorized) *request.add_memorized() = ClassCondition(label);
  for (int64_t label : flags.not_memorized) *request.add_not_memorized() = ClassCondition(label);
  // Each file's prompts follow the classes of the same side.
  const std::pair<const std::string*, google::protobuf::RepeatedPtrField<v1::Condition>*> files[] =
      {{&flags.memorized_prompts, request.mutable_memorized()},
       {&flags.not_memorized_prompts, request.mutable_not_memorized()}};
  for (const auto& [path, side] : files) {
    if (path->empty()) continue;
    absl::StatusOr<std::vector<v1::Condition>> prompts = ReadPromptFile(*path);
    if (!prompts.ok()) return Fail(prompts.status());
    for (v1::Condition& condition : *prompts) *side->Add() = std::move(condition);
  }
  if (request.memorized().empty() || request.not_memorized().empty()) {
    return Fail(absl::InvalidArgumentError(
        "give known memorized and not-memorized conditions: --memorized / --memorized-prompts "
        "and --not-memorized / --not-memorized-prompts"));
  }
  request.set_samples_per_condition(flags.samples);
  request.set_seed(flags.seed);
  request.set_early_steps(flags.early_steps);
  request.set_early_only(flags.early_only);
  if (absl::Status s = flags.sampling.Fill(request.mutable_sampling()); !s.ok()) return Fail(s);
  absl::StatusOr<v1::CalibrationResponse> response = common.Connect().Calibrate(request);
  if (!response.ok()) return Fail(response.status());
  PrintResult(common.json, *response, CalibrationJson, CalibrationText);
  return kExitOk;
}

struct EarlyFlags {
  SamplingFlags sampling;
  ConditionFlags condition;
  int64_t count = 16;
  uint64_t seed = 0;
  int64_t steps = 1;
  int64_t probes = 0;
  bool forward_only = false;
};

int RunEarly(const CommonOptions& common, const EarlyFlags& flags) {
  v1::EarlyMetricsRequest request;
  request.set_model(flags.sampling.model);
  for (int64_t i = 0; i < flags.count; ++i) request.add_seeds(flags.seed + i);
  flags.condition.Fill(request.mutable_condition());
  if (absl::Status s = flags.sampling.Fill(request.mutable_sampling()); !s.ok()) return Fail(s);
  request.set_steps(flags.steps);
  request.set_hutchinson_probes(flags.probes);
  request.set_forward_only(flags.forward_only);
  absl::StatusOr<v1::EarlyMetricsResponse> response = common.Connect().EarlyMetrics(request);
  if (!response.ok()) return Fail(response.status());
  PrintResult(common.json, *response, EarlyMetricsJson, EarlyMetricsText);
  return kExitOk;
}

}  // namespace

Command AddSample(CLI::App& app, CommonOptions& common) {
  auto flags = std::make_shared<SampleFlags>();
  CLI::App* command =
      app.add_subcommand("sample", "draw samples; PNG grid for images, .npy otherwise");
  flags->sampling.Add(command);
  AddCountOption(command, "--count", flags->count, "samples");
  AddSeedOption(command, flags->seed, "first seed (sample i uses seed + i)");
  flags->condition.Add(command, "class label");
  command->add_option("--out", flags->out, "output file: .png (image models) or .npy");
  command->add_option("--range", flags->low, "pixel value mapped to black (PNG)")
      ->capture_default_str();
  command->add_option("--range-high", flags->high, "pixel value mapped to white (PNG)")
      ->capture_default_str();
  return {command, [flags](const CommonOptions& common) { return RunSample(common, *flags); }};
}

Command AddSpectrum(CLI::App& app, CommonOptions& common) {
  auto flags = std::make_shared<SpectrumFlags>();
  CLI::App* command = app.add_subcommand("spectrum", "curvature spectrum at a sampled point");
  flags->sampling.Add(command);
  AddSeedOption(command, flags->seed, "seed of the sample");
  flags->condition.Add(command, "class label");
  command->add_option("--t", flags->timestep,
                      "timestep (default: the one whose sigma_t is nearest 0.08)");
  flags->curvature.AddScoreKind(command, "conditional | unconditional | guided | difference");
  command->add_flag("--symmetrize", flags->curvature.symmetrize,
                    "spectrum of (H + H^T)/2 instead of H");
  flags->curvature.AddMethod(command);
  flags->curvature.AddTarget(command);
  command->add_option("--top", flags->top, "eigenvalues to print (0: all)")->capture_default_str();
  command->add_flag("--json", common.json, "machine-readable output");
  command->add_option("--plot", flags->plot, "write an SVG plot of the spectrum");
  command->add_option("--early-steps", flags->early_steps,
                      "also the early metrics of this generation over its first K steps");
  return {command, [flags](const CommonOptions& common) { return RunSpectrum(common, *flags); }};
}

Command AddCalibrate(CLI::App& app, CommonOptions& common) {
  auto flags = std::make_shared<CalibrateFlags>();
  CLI::App* command = app.add_subcommand(
      "calibrate",
      "ROC AUC, TPR at 1% FPR and thresholds of each metric on labelled classes or prompts");
  flags->sampling.Add(command);
  command->add_option("--memorized", flags->memorized, "class labels known to be memorized")
      ->delimiter(',');
  command->add_option("--not-memorized", flags->not_memorized, "class labels known to generalize")
      ->delimiter(',');
  command->add_option("--memorized-prompts", flags->memorized_prompts,
                      "file of prompts known to be memorized (one per line, or JSON Lines)");
  command->add_option("--not-memorized-prompts", flags->not_memorized_prompts,
                      "file of prompts known to generalize");
  AddCountOption(command, "--samples", flags->samples, "generations per condition");
  AddSeedOption(command, flags->seed, "first seed");
  command->add_option("--early-steps", flags->early_steps, "K for the early metrics");
  command->add_flag("--early-only", flags->early_only,
                    "only the early metrics: the first K steps of each generation, no spectra");
  command->add_flag("--json", common.json, "machine-readable output");
  return {command, [flags](const CommonOptions& common) { return RunCalibrate(common, *flags); }};
}

Command AddEarly(CLI::App& app, CommonOptions& common) {
  auto flags = std::make_shared<EarlyFlags>();
  CLI::App* command = app.add_subcommand("early",
                                         "first-step memorization metrics (Wen, Jeon, anisotropy; "
                                         "unconditional: |s|^2, |Hs|^2, tr H)");
  flags->sampling.Add(command);
  flags->condition.Add(command, "class label (none: unconditional metrics)");
  AddCountOption(command, "--count", flags->count, "generations n");
  AddSeedOption(command, flags->seed, "first seed");
  command->add_option("--early-steps", flags->steps, "the first K sampling steps")
      ->capture_default_str();
  command->add_option("--probes", flags->probes, "Hutchinson probes (default 8)")
      ->check(PositiveNumber());
  command->add_flag("--forward-only", flags->forward_only,
                    "only the metrics from forward passes (Wen, anisotropy, |s|^2): no JVP");
  command->add_flag("--json", common.json, "machine-readable output");
  return {command, [flags](const CommonOptions& common) { return RunEarly(common, *flags); }};
}

}  // namespace memaudit::client::cli
