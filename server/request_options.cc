#include "request_options.h"

#include <ATen/ATen.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "tensor_codec.h"

namespace memaudit::server {
namespace {
constexpr int64_t kMaxChunkRows = 1 << 16;
}  // namespace

absl::StatusOr<SamplerOptions> ToSamplerOptions(const v1::SamplingOptions& sampling,
                                                const NoiseSchedule& schedule,
                                                const std::string& field) {
  SamplerOptions options;
  options.kind = sampling.sampler() == v1::DDPM ? SamplerKind::kDdpm : SamplerKind::kDdim;
  if (sampling.num_steps() != 0) options.num_steps = sampling.num_steps();
  if (options.num_steps < 1 || options.num_steps > schedule.num_train_timesteps()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".num_steps: must be in [1, ",
                                                   schedule.num_train_timesteps(), "], got ",
                                                   options.num_steps));
  }
  options.eta = sampling.eta();
  if (!(options.eta >= 0 && options.eta <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".eta: must be in [0, 1]"));
  }
  options.steps_offset = sampling.steps_offset();
  if (sampling.has_guidance_scale()) {
    options.guidance = sampling.guidance_scale();
    if (!std::isfinite(options.guidance) || std::abs(options.guidance) > 1000) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".guidance_scale: must be finite and at most 1000 in magnitude"));
    }
  }
  auto timesteps =
      LeadingTimesteps(schedule.num_train_timesteps(), options.num_steps, options.steps_offset);
  if (!timesteps.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", timesteps.status().message()));
  }
  return options;
}

absl::StatusOr<CurvatureSettings> ToCurvatureSettings(const v1::CurvatureOptions& options,
                                                      const std::string& field) {
  CurvatureSettings settings;
  switch (options.score_kind()) {
    case v1::UNCONDITIONAL:
      settings.score_kind = ScoreKind::kUnconditional;
      break;
    case v1::GUIDED:
      settings.score_kind = ScoreKind::kGuided;
      break;
    case v1::DIFFERENCE:
      settings.score_kind = ScoreKind::kDifference;
      break;
    default:
      settings.score_kind = ScoreKind::kConditional;
  }
  settings.spectrum.symmetrize = options.symmetrize();
  if (options.positive_tolerance() != 0) {
    if (!(options.positive_tolerance() > 0 && options.positive_tolerance() < 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".positive_tolerance: must be in (0, 1)"));
    }
    settings.spectrum.positive_tolerance = options.positive_tolerance();
  }
  if (options.jacobian_chunk_rows() != 0) {
    if (options.jacobian_chunk_rows() < 1 || options.jacobian_chunk_rows() > kMaxChunkRows) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".jacobian_chunk_rows: must be in [1, ", kMaxChunkRows, "]"));
    }
    settings.jacobian.chunk_rows = options.jacobian_chunk_rows();
  }
  switch (options.method()) {
    case v1::DENSE:
      settings.method = SpectrumMethod::kDense;
      break;
    case v1::ARNOLDI:
      settings.method = SpectrumMethod::kArnoldi;
      break;
    default:
      settings.method = SpectrumMethod::kAuto;
  }
  switch (options.target()) {
    case v1::LARGEST_MAGNITUDE:
      settings.arnoldi.target = EigenTarget::kLargestMagnitude;
      break;
    case v1::SMALLEST_REAL:
      settings.arnoldi.target = EigenTarget::kSmallestReal;
      break;
    default:
      settings.arnoldi.target = EigenTarget::kLargestReal;
  }
  if (options.num_eigenvalues() != 0) {
    if (options.num_eigenvalues() < 1 || options.num_eigenvalues() > 4096) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".num_eigenvalues: must be in [1, 4096]"));
    }
    settings.arnoldi.num_eigenvalues = options.num_eigenvalues();
  }
  if (options.arnoldi_tolerance() != 0) {
    if (!(options.arnoldi_tolerance() > 0 && options.arnoldi_tolerance() < 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".arnoldi_tolerance: must be in (0, 1)"));
    }
    settings.arnoldi.tolerance = options.arnoldi_tolerance();
  }
  if (options.max_restarts() != 0) {
    if (options.max_restarts() < 1 || options.max_restarts() > 100000) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".max_restarts: must be in [1, 100000]"));
    }
    settings.arnoldi.max_restarts = options.max_restarts();
  }
  return settings;
}

absl::StatusOr<at::Tensor> ToConditionBatch(const v1::Condition& condition,
                                            const Denoiser& denoiser, int64_t batch,
                                            const std::string& field) {
  const v1::Conditioning& conditioning = denoiser.checkpoint().config().conditioning();
  at::Tensor tensor;
  switch (condition.kind_case()) {
    case v1::Condition::kClassLabel:
      if (conditioning.kind() != v1::Conditioning::CLASS_LABEL) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ".class_label: the model is not class-conditional"));
      }
      tensor = at::full({batch}, condition.class_label(), at::kLong);
      break;
    case v1::Condition::kEmbedding: {
      if (conditioning.kind() != v1::Conditioning::EMBEDDING) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ".embedding: the model does not take embeddings"));
      }
      auto embedding = DecodeTensor(condition.embedding(), field + ".embedding");
      if (!embedding.ok()) return embedding.status();
      tensor = embedding->unsqueeze(0)
                   .expand([&] {
                     std::vector<int64_t> shape{batch};
                     for (int64_t d : embedding->sizes()) shape.push_back(d);
                     return shape;
                   }())
                   .contiguous();
      break;
    }
    case v1::Condition::kPrompt:
      return absl::UnimplementedError(
          absl::StrCat(field,
                       ".prompt: text prompts are not supported yet; encode the prompt with the "
                       "model's text encoder and pass the embedding"));
    default:
      break;  // null condition, or none
  }
  auto prepared = denoiser.PrepareConditions(tensor, batch);
  if (!prepared.ok()) {
    return absl::Status(prepared.status().code(),
                        absl::StrCat(field, ": ", prepared.status().message()));
  }
  return prepared;
}

std::string ConditionLabel(const v1::Condition& condition) {
  switch (condition.kind_case()) {
    case v1::Condition::kClassLabel:
      return absl::StrCat("class ", condition.class_label());
    case v1::Condition::kEmbedding:
      return "embedding";
    case v1::Condition::kNullCondition:
      return "null";
    case v1::Condition::kPrompt:
      return "prompt";
    default:
      return "none";
  }
}

absl::Status CheckTimestep(int64_t t, const NoiseSchedule& schedule, const std::string& field) {
  if (t < 0 || t >= schedule.num_train_timesteps()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": timestep ", t, " outside [0, ",
                                                   schedule.num_train_timesteps() - 1, "]"));
  }
  return absl::OkStatus();
}

void ToEarlyMetricsProto(const EarlyMetricSamples& metrics, v1::EarlyMetricsResponse* proto) {
  auto fill = [](const std::vector<double>& values, v1::EarlyMetricValues* out) {
    for (double v : values) out->add_values(v);
    out->set_mean(Mean(values));
  };
  proto->set_conditional(metrics.conditional);
  for (int64_t t : metrics.timesteps) proto->add_timesteps(t);
  if (metrics.conditional) {
    fill(metrics.wen, proto->mutable_wen_noise_difference());
    fill(metrics.jeon, proto->mutable_jeon_sharpness());
  } else {
    fill(metrics.score_norm_squared, proto->mutable_score_norm_squared());
    fill(metrics.hessian_score_squared, proto->mutable_hessian_score_squared());
    fill(metrics.hutchinson_trace, proto->mutable_hutchinson_trace());
  }
}

void ToSummaryProto(const SpectrumSummary& summary, v1::SpectrumSummary* proto) {
  proto->set_dimension(summary.dimension);
  proto->set_positive_eigenvalues(summary.positive_count);
  proto->set_flat_directions(summary.flat_count);
  proto->set_min_kappa(summary.min_kappa);
  proto->set_max_kappa(summary.max_kappa);
  proto->set_mean_kappa(summary.mean_kappa);
  if (std::isfinite(summary.width)) proto->set_width(summary.width);
  if (std::isfinite(summary.radius)) proto->set_radius(summary.radius);
  if (std::isfinite(summary.noise_radius)) proto->set_noise_radius(summary.noise_radius);
  proto->set_partial(summary.partial);
  proto->set_flat_directions_lower_bound(summary.flat_count_is_lower_bound);
}

}  // namespace memaudit::server
