// mitigate: the guard against copying (AuditService.Mitigate), with PNG
// grids of each seed's sample before | after.
#include <iostream>
#include <memory>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/cli/commands.h"
#include "client/cli/common.h"
#include "client/mitigation_format.h"
#include "client/sample_files.h"

namespace memaudit::client::cli {
namespace {

struct MitigateFlags {
  SamplingFlags sampling;
  ConditionFlags condition;
  CurvatureFlags curvature;
  int64_t count = 16;
  uint64_t seed = 0;
  std::optional<int64_t> guard_steps;
  std::optional<double> step_size;
  double target = 0;
  std::string out;
  float low = -1, high = 1;
};

// The guarded seeds of `request` in seed order, as the server streams them
// (a progress bar on a terminal; Ctrl-C cancels).
absl::StatusOr<std::vector<v1::MitigatedSample>> StreamedMitigation(
    Client& client, const v1::MitigateRequest& request, bool quiet) {
  CatchInterrupts();
  ProgressBar bar(quiet);
  std::vector<v1::MitigatedSample> results;
  absl::Status status = client.Mitigate(
      request,
      [&](const v1::MitigatedSample& result) -> absl::Status {
        const size_t next = results.size();
        if (next == static_cast<size_t>(request.seeds_size()) ||
            result.seed() != request.seeds(static_cast<int>(next))) {
          return absl::InternalError(
              absl::StrCat("the server streamed an unexpected seed after ", next));
        }
        results.push_back(result);
        bar.Draw(static_cast<int64_t>(results.size()), request.seeds_size(), " guarded");
        return absl::OkStatus();
      },
      Interrupted);
  bar.Done();
  if (!status.ok()) return status;
  if (results.size() != static_cast<size_t>(request.seeds_size())) {
    return absl::InternalError(absl::StrCat("the server streamed ", results.size(), " of ",
                                            request.seeds_size(), " seeds"));
  }
  return results;
}

// Writes each seed's sample before | after: a PNG grid with one row per
// seed for image models, else a .npy of [seeds, 2, *shape].
absl::Status WriteBeforeAfter(const std::string& path,
                              const std::vector<v1::MitigatedSample>& results, bool images,
                              const std::vector<int64_t>& shape, float low, float high) {
  std::vector<float> values;
  for (const v1::MitigatedSample& result : results) {
    for (const v1::Tensor* tensor : {images ? &result.image_before() : &result.sample_before(),
                                     images ? &result.image_after() : &result.sample_after()}) {
      absl::StatusOr<std::vector<float>> sample = TensorValues(*tensor);
      if (!sample.ok()) return sample.status();
      values.insert(values.end(), sample->begin(), sample->end());
    }
  }
  const int64_t count = 2 * static_cast<int64_t>(results.size());
  if (absl::EndsWith(path, ".png")) {
    if (!IsImageShape(shape)) {
      return absl::InvalidArgumentError(
          "--out .png needs an image-shaped model ([H, W], [1, H, W] or [3, H, W]); use .npy");
    }
    return WritePngGrid(path, values, count, shape, low, high, /*columns=*/2);
  }
  std::vector<int64_t> full{static_cast<int64_t>(results.size()), 2};
  full.insert(full.end(), shape.begin(), shape.end());
  return WriteNpy(path, values, full);
}

int RunMitigate(const CommonOptions& common, const MitigateFlags& flags) {
  if (!flags.out.empty()) {
    if (absl::Status name = CheckSampleFileName("--out", flags.out); !name.ok()) return Fail(name);
  }
  Client client = common.Connect();
  absl::StatusOr<v1::ModelInfo> info = client.GetModel(flags.sampling.model);
  if (!info.ok()) return Fail(info.status());
  v1::MitigateRequest request;
  request.set_model(flags.sampling.model);
  for (int64_t i = 0; i < flags.count; ++i) request.add_seeds(flags.seed + i);
  flags.condition.Fill(request.mutable_condition());
  if (absl::Status s = flags.sampling.Fill(request.mutable_sampling()); !s.ok()) return Fail(s);
  if (absl::Status s = flags.curvature.Fill(request.mutable_curvature()); !s.ok()) return Fail(s);
  if (flags.guard_steps) request.set_max_steps(*flags.guard_steps);
  if (flags.step_size) request.set_step_size(*flags.step_size);
  request.set_target_sharpness(flags.target);
  // A latent model's PNG shows the decoded images; .npy keeps the latents.
  const bool png = absl::EndsWith(flags.out, ".png");
  request.set_decode(png && info->config().has_latent());
  absl::StatusOr<std::vector<v1::MitigatedSample>> results =
      StreamedMitigation(client, request, common.quiet);
  if (!results.ok()) return Fail(results.status());
  if (common.json) {
    PrintJson(MitigationJson(flags.sampling.model, *results));
  } else {
    std::cout << MitigationText(*results);
  }
  if (!flags.out.empty()) {
    const auto& shape_field =
        request.decode() ? info->config().latent().image_shape() : info->config().sample_shape();
    const std::vector<int64_t> shape(shape_field.begin(), shape_field.end());
    if (absl::Status s =
            WriteBeforeAfter(flags.out, *results, request.decode(), shape, flags.low, flags.high);
        !s.ok()) {
      return Fail(s);
    }
    if (!common.json) {
      std::cout << "wrote " << results->size() << " seeds (before | after) to " << flags.out
                << std::endl;
    }
  }
  return kExitOk;
}

}  // namespace

Command AddMitigate(CLI::App& app, CommonOptions& common) {
  auto flags = std::make_shared<MitigateFlags>();
  CLI::App* command = app.add_subcommand(
      "mitigate",
      "move each seed's initial noise off a sharp first step, sample, and judge before | after");
  flags->sampling.Add(command);
  flags->condition.Add(command, "class label (none: unconditional)");
  AddCountOption(command, "--count", flags->count, "seeds");
  AddSeedOption(command, flags->seed, "first seed (seed i is seed + i)");
  command->add_option("--guard-steps", flags->guard_steps,
                      "gradient steps per seed, at most (default 10)");
  command->add_option("--step-size", flags->step_size,
                      "each step's length as a fraction of |x_T| (default 0.05)");
  command
      ->add_option("--target", flags->target,
                   "stop a seed once its first-step sharpness is at most this (0: never)")
      ->capture_default_str();
  flags->curvature.AddMethod(command);
  command->add_option("--out", flags->out,
                      "write the samples before | after: .png grid (a row per seed) or .npy");
  command->add_option("--range", flags->low, "pixel value mapped to black (PNG)")
      ->capture_default_str();
  command->add_option("--range-high", flags->high, "pixel value mapped to white (PNG)")
      ->capture_default_str();
  command->add_flag("--json", common.json, "machine-readable output");
  command->add_flag("--quiet", common.quiet, "no progress bar");
  return {command, [flags](const CommonOptions& common) { return RunMitigate(common, *flags); }};
}

}  // namespace memaudit::client::cli
