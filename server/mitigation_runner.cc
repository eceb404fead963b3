#include "server/mitigation_runner.h"

#include <ATen/ATen.h>

#include <chrono>

#include "core/audit/sample_curvature.h"
#include "core/base/status_macros.h"
#include "core/checkpoint/latent_decoder.h"
#include "core/early/mitigation.h"
#include "core/model/sampler.h"
#include "server/request_options.h"
#include "server/tensor_codec.h"

namespace memaudit::server {
namespace {

// The final samples of `measured` as one float32 CPU batch [B, *sample_shape].
at::Tensor Samples(const std::vector<SampleCurvature>& measured) {
  std::vector<at::Tensor> rows;
  rows.reserve(measured.size());
  for (const SampleCurvature& sample : measured) rows.push_back(sample.sample);
  return at::stack(rows).to(at::kCPU, at::kFloat);
}

// `samples` decoded to images (float32, CPU), one Decode call per batch.
absl::StatusOr<at::Tensor> Decoded(const at::Tensor& samples, const LatentDecoder& decoder,
                                   const DiffusionNetwork& checkpoint) {
  ASSIGN_OR_RETURN(const at::Tensor images,
                   decoder.Decode(samples.to(checkpoint.device(), checkpoint.dtype())));
  return images.to(at::kCPU, at::kFloat);
}

}  // namespace

absl::StatusOr<std::vector<v1::MitigatedSample>> RunMitigation(const MitigatePlan& plan,
                                                               const std::vector<uint64_t>& seeds,
                                                               const StopCheck& stop) {
  const LoadedModel& model = *plan.model;
  const Denoiser& denoiser = *model.denoiser;
  const int64_t count = static_cast<int64_t>(seeds.size());
  const at::Tensor conditions = RepeatCondition(plan.condition, count);
  const ReferenceSet* reference = model.reference ? &*model.reference : nullptr;

  const at::Tensor x_T = InitialNoise(*model.network, seeds);
  const auto guard_start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(const MitigationResult guarded,
                   MitigateInitialNoise(denoiser, x_T, conditions, plan.guard, stop));
  const double guard_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - guard_start).count();

  ASSIGN_OR_RETURN(const std::vector<SampleCurvature> before,
                   MeasureSamples(denoiser, seeds, conditions, plan.curvature, reference, stop));
  SampleCurvatureOptions moved = plan.curvature;
  moved.sampler.initial_state = guarded.x_T;
  ASSIGN_OR_RETURN(const std::vector<SampleCurvature> after,
                   MeasureSamples(denoiser, seeds, conditions, moved, reference, stop));

  const at::Tensor samples_before = Samples(before), samples_after = Samples(after);
  at::Tensor images_before, images_after;
  if (plan.decode) {
    const LatentDecoder& decoder = *model.network->latent_decoder();
    ASSIGN_OR_RETURN(images_before, Decoded(samples_before, decoder, *model.network));
    ASSIGN_OR_RETURN(images_after, Decoded(samples_after, decoder, *model.network));
  }
  const at::Tensor moved_x_T = guarded.x_T.to(at::kCPU, at::kFloat);
  const at::Tensor change = (guarded.x_T - x_T).flatten(1).norm(2, 1) / x_T.flatten(1).norm(2, 1);
  std::vector<v1::MitigatedSample> responses(seeds.size());
  for (int64_t b = 0; b < count; ++b) {
    v1::MitigatedSample& out = responses[b];
    out.set_seed(seeds[b]);
    out.set_conditional(guarded.conditional);
    out.set_sharpness_before(guarded.before[b]);
    out.set_sharpness_after(guarded.after[b]);
    out.set_steps(guarded.steps[b]);
    out.set_initial_noise_change(change[b].item<double>());
    EncodeTensor(moved_x_T.narrow(0, b, 1), out.mutable_initial_noise());
    EncodeTensor(samples_before.narrow(0, b, 1), out.mutable_sample_before());
    EncodeTensor(samples_after.narrow(0, b, 1), out.mutable_sample_after());
    if (plan.decode) {
      EncodeTensor(images_before.narrow(0, b, 1), out.mutable_image_before());
      EncodeTensor(images_after.narrow(0, b, 1), out.mutable_image_after());
    }
    ToSampleReport(before[b], model.policy, out.mutable_before());
    ToSampleReport(after[b], model.policy, out.mutable_after());
    out.set_guard_seconds(guard_seconds / static_cast<double>(count));
  }
  return responses;
}

}  // namespace memaudit::server
