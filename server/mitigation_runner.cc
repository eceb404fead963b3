#include "mitigation_runner.h"

#include <ATen/ATen.h>

#include <chrono>

#include "mitigation.h"
#include "request_options.h"
#include "sample_curvature.h"
#include "sampler.h"
#include "status_macros.h"
#include "tensor_codec.h"

namespace memaudit::server {
namespace {

// `sample` [*sample_shape] as a [1, *sample_shape] float32 message, and
// its decoded image when `decoder` is given.
absl::Status EncodeSample(const at::Tensor& sample, const LatentDecoder* decoder,
                          const Checkpoint& checkpoint, v1::Tensor* sample_message,
                          v1::Tensor* image_message) {
  const at::Tensor row = sample.unsqueeze(0).to(at::kCPU, at::kFloat);
  EncodeTensor(row, sample_message);
  if (decoder != nullptr) {
    ASSIGN_OR_RETURN(const at::Tensor image,
                     decoder->Decode(row.to(checkpoint.device(), checkpoint.dtype())));
    EncodeTensor(image.to(at::kCPU, at::kFloat), image_message);
  }
  return absl::OkStatus();
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

  const at::Tensor x_T = InitialNoise(*model.checkpoint, seeds);
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

  const LatentDecoder* decoder = plan.decode ? model.checkpoint->latent_decoder() : nullptr;
  const at::Tensor change = (guarded.x_T - x_T).flatten(1).norm(2, 1) / x_T.flatten(1).norm(2, 1);
  std::vector<v1::MitigatedSample> responses(seeds.size());
  for (int64_t b = 0; b < count; ++b) {
    RETURN_IF_ERROR(CheckStop(stop));
    v1::MitigatedSample& out = responses[b];
    out.set_seed(seeds[b]);
    out.set_conditional(guarded.conditional);
    out.set_sharpness_before(guarded.before[b]);
    out.set_sharpness_after(guarded.after[b]);
    out.set_steps(guarded.steps[b]);
    out.set_initial_noise_change(change[b].item<double>());
    EncodeTensor(guarded.x_T.narrow(0, b, 1).to(at::kCPU, at::kFloat), out.mutable_initial_noise());
    RETURN_IF_ERROR(EncodeSample(before[b].sample, decoder, *model.checkpoint,
                                 out.mutable_sample_before(), out.mutable_image_before()));
    RETURN_IF_ERROR(EncodeSample(after[b].sample, decoder, *model.checkpoint,
                                 out.mutable_sample_after(), out.mutable_image_after()));
    ToSampleReport(before[b], model.policy, out.mutable_before());
    ToSampleReport(after[b], model.policy, out.mutable_after());
    out.set_guard_seconds(guard_seconds / static_cast<double>(count));
  }
  return responses;
}

}  // namespace memaudit::server
