#include "server/request_options.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "core/base/status_macros.h"
#include "core/checkpoint/text_encoder.h"
#include "core/early/token_attribution.h"
#include "proto/token_shares.h"
#include "server/tensor_codec.h"

namespace memaudit::server {
namespace {

constexpr int64_t kMaxChunkRows = 1 << 16;
constexpr int64_t kMaxEigenvalues = 4096;
constexpr int64_t kMaxRestarts = 100000;

absl::Status OutOfRange(const std::string& field, const std::string& range) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": must be ", range));
}

// Sets `*value` from a proto field where 0 means "the default", checking
// [low, high] otherwise.
absl::Status SetIfGiven(int64_t given, int64_t low, int64_t high, const std::string& field,
                        int64_t* value) {
  if (given == 0) return absl::OkStatus();
  if (given < low || given > high) {
    return OutOfRange(field, absl::StrCat("in [", low, ", ", high, "], got ", given));
  }
  *value = given;
  return absl::OkStatus();
}

// As above for a fraction in the open interval (0, 1).
absl::Status SetFractionIfGiven(double given, const std::string& field, double* value) {
  if (given == 0) return absl::OkStatus();
  if (!(given > 0 && given < 1)) return OutOfRange(field, absl::StrCat("in (0, 1), got ", given));
  *value = given;
  return absl::OkStatus();
}

absl::StatusOr<ScoreKind> ToScoreKind(v1::ScoreKind kind) {
  switch (kind) {
    case v1::SCORE_KIND_UNSPECIFIED:
    case v1::CONDITIONAL:
      return ScoreKind::kConditional;
    case v1::UNCONDITIONAL:
      return ScoreKind::kUnconditional;
    case v1::GUIDED:
      return ScoreKind::kGuided;
    case v1::DIFFERENCE:
      return ScoreKind::kDifference;
    default:
      return OutOfRange("curvature.score_kind", absl::StrCat("a ScoreKind, got ", kind));
  }
}

absl::StatusOr<SpectrumMethod> ToSpectrumMethod(v1::SpectrumMethod method) {
  switch (method) {
    case v1::SPECTRUM_METHOD_AUTO:
      return SpectrumMethod::kAuto;
    case v1::DENSE:
      return SpectrumMethod::kDense;
    case v1::ARNOLDI:
      return SpectrumMethod::kArnoldi;
    default:
      return OutOfRange("curvature.method", absl::StrCat("a SpectrumMethod, got ", method));
  }
}

absl::StatusOr<EigenTarget> ToEigenTarget(v1::EigenTarget target) {
  switch (target) {
    case v1::EIGEN_TARGET_UNSPECIFIED:
    case v1::LARGEST_REAL:
      return EigenTarget::kLargestReal;
    case v1::LARGEST_MAGNITUDE:
      return EigenTarget::kLargestMagnitude;
    case v1::SMALLEST_REAL:
      return EigenTarget::kSmallestReal;
    default:
      return OutOfRange("curvature.target", absl::StrCat("an EigenTarget, got ", target));
  }
}

}  // namespace

absl::StatusOr<SamplerOptions> ToSamplerOptions(const v1::SamplingOptions& sampling,
                                                const NoiseSchedule& schedule,
                                                const std::string& field) {
  SamplerOptions options;
  switch (sampling.sampler()) {
    case v1::SAMPLER_UNSPECIFIED:
    case v1::DDIM:
      options.kind = SamplerKind::kDdim;
      break;
    case v1::DDPM:
      options.kind = SamplerKind::kDdpm;
      break;
    default:
      return OutOfRange(field + ".sampler", absl::StrCat("DDIM or DDPM, got ", sampling.sampler()));
  }
  const int64_t train_steps = schedule.num_train_timesteps();
  RETURN_IF_ERROR(
      SetIfGiven(sampling.num_steps(), 1, train_steps, field + ".num_steps", &options.num_steps));
  options.eta = sampling.eta();
  if (!(options.eta >= 0 && options.eta <= 1)) return OutOfRange(field + ".eta", "in [0, 1]");
  // Bounded before use: (num_steps − 1)·ratio + offset must not overflow.
  if (sampling.steps_offset() < 0 || sampling.steps_offset() >= train_steps) {
    return OutOfRange(field + ".steps_offset",
                      absl::StrCat("in [0, ", train_steps - 1, "], got ", sampling.steps_offset()));
  }
  options.steps_offset = sampling.steps_offset();
  if (sampling.has_guidance_scale()) {
    options.guidance = sampling.guidance_scale();
    if (!std::isfinite(options.guidance) || std::abs(options.guidance) > 1000) {
      return OutOfRange(field + ".guidance_scale", "finite and at most 1000 in magnitude");
    }
  }
  auto timesteps = LeadingTimesteps(train_steps, options.num_steps, options.steps_offset);
  if (!timesteps.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", timesteps.status().message()));
  }
  return options;
}

absl::StatusOr<SampleCurvatureOptions> ToCurvatureOptions(const v1::SamplingOptions& sampling,
                                                          const v1::CurvatureOptions& curvature,
                                                          const LoadedModel& model) {
  SampleCurvatureOptions options;
  ASSIGN_OR_RETURN(options.sampler,
                   ToSamplerOptions(sampling, model.denoiser->schedule(), "sampling"));
  ASSIGN_OR_RETURN(options.score_kind, ToScoreKind(curvature.score_kind()));
  ASSIGN_OR_RETURN(options.method, ToSpectrumMethod(curvature.method()));
  ASSIGN_OR_RETURN(options.arnoldi.target, ToEigenTarget(curvature.target()));
  options.spectrum.symmetrize = curvature.symmetrize();
  RETURN_IF_ERROR(SetFractionIfGiven(curvature.positive_tolerance(), "curvature.positive_tolerance",
                                     &options.spectrum.positive_tolerance));
  RETURN_IF_ERROR(SetIfGiven(curvature.jacobian_chunk_rows(), 1, kMaxChunkRows,
                             "curvature.jacobian_chunk_rows", &options.jacobian.chunk_rows));
  RETURN_IF_ERROR(SetIfGiven(curvature.num_eigenvalues(), 1, kMaxEigenvalues,
                             "curvature.num_eigenvalues", &options.arnoldi.num_eigenvalues));
  options.arnoldi.tolerance = kVerdictGradeTolerance;
  RETURN_IF_ERROR(SetFractionIfGiven(curvature.arnoldi_tolerance(), "curvature.arnoldi_tolerance",
                                     &options.arnoldi.tolerance));
  RETURN_IF_ERROR(SetIfGiven(curvature.max_restarts(), 1, kMaxRestarts, "curvature.max_restarts",
                             &options.arnoldi.max_restarts));
  options.max_dense_dimension = model.max_dense_dimension;
  const int64_t dimension = model.network->sample_numel();
  if (options.method == SpectrumMethod::kDense && dimension > options.max_dense_dimension) {
    return absl::InvalidArgumentError(absl::StrCat(
        "curvature.method: dimension ", dimension, " exceeds the dense-spectrum limit ",
        options.max_dense_dimension, " (server flag --max_dense_dimension); use ARNOLDI"));
  }
  const bool arnoldi =
      ResolveSpectrumMethod(options.method, dimension, options.max_dense_dimension) ==
      SpectrumMethod::kArnoldi;
  if (options.spectrum.symmetrize && arnoldi) {
    return absl::InvalidArgumentError("curvature.symmetrize: only the dense method offers it");
  }
  // Checked here, before any work, as the engine would check it per sample.
  if (arnoldi && dimension < 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "curvature.method: Arnoldi needs d >= 3, this model has d = ", dimension, "; use DENSE"));
  }
  if (arnoldi && options.arnoldi.num_eigenvalues + 2 > dimension) {
    return OutOfRange("curvature.num_eigenvalues",
                      absl::StrCat("in [1, d - 2] = [1, ", dimension - 2, "] for Arnoldi at d = ",
                                   dimension, ", got ", options.arnoldi.num_eigenvalues));
  }
  return options;
}

namespace {

constexpr size_t kMaxConditionNameBytes = 256;
constexpr size_t kLabelPromptChars = 60;

// `text` cut to at most `chars` code points (never inside a UTF-8 sequence),
// with "…" when cut.
std::string CutUtf8(const std::string& text, size_t chars) {
  size_t end = 0, count = 0;
  while (end < text.size() && count < chars) {
    ++end;
    while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) ++end;
    ++count;
  }
  return end < text.size() ? text.substr(0, end) + "…" : text;
}

// `status` with the engine's subject (e.g. "condition: ", or "prompt 0: "
// from the text encoder) replaced by the request's field (e.g.
// "conditions[2]", "conditions[2].prompt").
absl::Status WithField(const absl::Status& status, absl::string_view engine_subject,
                       const std::string& field) {
  absl::string_view message = status.message();
  absl::ConsumePrefix(&message, engine_subject);
  return absl::Status(status.code(), absl::StrCat(field, ": ", message));
}

}  // namespace

absl::StatusOr<ConditionPlan> ToConditionPlan(const v1::Condition& condition,
                                              const Denoiser& denoiser, const std::string& field,
                                              const StopCheck& stop) {
  const v1::Conditioning& conditioning = denoiser.network().config().conditioning();
  if (condition.name().size() > kMaxConditionNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".name: ", condition.name().size(),
                                                   " bytes, more than the limit of ",
                                                   kMaxConditionNameBytes));
  }
  ConditionPlan plan;
  plan.condition = condition;
  plan.field = field;
  at::Tensor tensor;
  switch (condition.kind_case()) {
    case v1::Condition::kClassLabel:
      if (conditioning.kind() != v1::Conditioning::CLASS_LABEL) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ".class_label: the model is not class-conditional"));
      }
      tensor = at::full({1}, condition.class_label(), at::kLong);
      plan.label = absl::StrCat("class ", condition.class_label());
      break;
    case v1::Condition::kEmbedding: {
      if (conditioning.kind() != v1::Conditioning::EMBEDDING) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ".embedding: the model does not take embeddings"));
      }
      ASSIGN_OR_RETURN(const at::Tensor embedding,
                       DecodeTensor(condition.embedding(), field + ".embedding"));
      tensor = embedding.unsqueeze(0);
      plan.label = "embedding";
      break;
    }
    case v1::Condition::kPrompt: {
      const TextEncoder* encoder = denoiser.network().text_encoder();
      if (encoder == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ".prompt: the model has no text encoder (conditioning.text_encoder); ",
            conditioning.kind() == v1::Conditioning::EMBEDDING
                ? "pass the prompt's embedding instead"
                : "it does not take text"));
      }
      // Tokenizing now refuses bad text before any work; the ids are cheap
      // to recompute when the prompt is encoded.
      if (absl::Status tokenized = encoder->Tokenize({condition.prompt()}, stop).status();
          !tokenized.ok()) {
        return WithField(tokenized, "prompt 0: ", field + ".prompt");
      }
      plan.label = absl::StrCat("\"", CutUtf8(condition.prompt(), kLabelPromptChars), "\"");
      break;
    }
    case v1::Condition::kNullCondition:
      plan.label = "null";
      break;
    case v1::Condition::KIND_NOT_SET:
      plan.label = "none";
      break;
  }
  if (!condition.name().empty()) plan.label = condition.name();
  if (condition.has_prompt()) return plan;  // encoded by EncodePrompt
  auto prepared = denoiser.PrepareConditions(tensor, 1);
  if (!prepared.ok()) return WithField(prepared.status(), "condition: ", field);
  plan.row = *std::move(prepared);
  return plan;
}

absl::StatusOr<ConditionPlan> EncodePrompt(ConditionPlan plan, const Denoiser& denoiser,
                                           const StopCheck& stop) {
  if (!plan.needs_encoding()) return plan;
  absl::StatusOr<at::Tensor> embedding =
      denoiser.network().text_encoder()->Encode({plan.condition.prompt()}, stop);
  if (!embedding.ok()) return WithField(embedding.status(), "prompt 0: ", plan.field + ".prompt");
  auto prepared = denoiser.PrepareConditions(*embedding, 1);
  if (!prepared.ok()) return WithField(prepared.status(), "condition: ", plan.field);
  plan.row = *std::move(prepared);
  return plan;
}

absl::StatusOr<std::optional<v1::TokenAttribution>> AttributePromptTokens(
    const ConditionPlan& plan, const Denoiser& denoiser, const std::vector<uint64_t>& seeds,
    const SamplerOptions& sampler, const StopCheck& stop, int64_t rows_per_call) {
  const TextEncoder* encoder = denoiser.network().text_encoder();
  if (!plan.condition.has_prompt() || encoder == nullptr || !plan.row.defined() || seeds.empty()) {
    return std::nullopt;  // no prompt to attribute
  }
  const std::string& prompt = plan.condition.prompt();
  const std::string field = plan.field + ".prompt";
  absl::StatusOr<std::vector<std::string>> text_tokens = encoder->TextTokens(prompt, stop);
  if (!text_tokens.ok()) return WithField(text_tokens.status(), "prompt 0: ", field);
  absl::StatusOr<at::Tensor> deletions = encoder->EncodeWithEachTokenDeleted(prompt, stop);
  if (!deletions.ok()) return WithField(deletions.status(), "prompt 0: ", field);
  absl::StatusOr<TokenAttribution> by_deletion =
      ComputeTokenDeletions(denoiser, seeds, plan.row, *deletions, sampler, stop,
                            AttributionTimestep::kLowNoise, rows_per_call);
  if (!by_deletion.ok()) return WithField(by_deletion.status(), "", plan.field);
  v1::TokenAttribution proto;
  proto.set_samples(by_deletion->samples);
  proto.set_timestep(by_deletion->timestep);
  for (size_t i = 0; i < text_tokens->size(); ++i) {
    v1::TokenAttribution::Token* token = proto.add_tokens();
    token->set_position(encoder->first_text_position() + static_cast<int64_t>(i));
    token->set_text((*text_tokens)[i]);
    token->set_score(by_deletion->scores[i]);
  }
  SetTokenShares(proto);
  // Wen et al.'s gradient beside it, when the encoder allows one; its
  // failure leaves the deletion scores standing.
  absl::StatusOr<TokenAttribution> by_gradient = [&]() -> absl::StatusOr<TokenAttribution> {
    ASSIGN_OR_RETURN(const TextEncoder::DifferentiableEncoding encoding,
                     encoder->EncodeDifferentiably(prompt, stop));
    return ComputeTokenGradients(
        denoiser, seeds, {encoding.embedding, encoding.table, encoding.text_ids}, sampler, stop);
  }();
  if (!by_gradient.ok()) {
    RETURN_IF_ERROR(CheckStop(stop));
    proto.set_gradient_unavailable(std::string(by_gradient.status().message()));
  } else {
    for (size_t i = 0; i < by_gradient->scores.size() && i < text_tokens->size(); ++i) {
      proto.mutable_tokens(static_cast<int>(i))->set_gradient(by_gradient->scores[i]);
    }
  }
  return proto;
}

at::Tensor RepeatCondition(const ConditionPlan& condition, int64_t batch) {
  if (!condition.row.defined()) return condition.row;
  std::vector<int64_t> shape = condition.row.sizes().vec();
  shape[0] = batch;
  return condition.row.expand(shape).contiguous();
}

absl::Status CheckTimestep(int64_t t, const NoiseSchedule& schedule, const std::string& field) {
  if (t < 0 || t >= schedule.num_train_timesteps()) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": timestep ", t, " outside [0, ",
                                                   schedule.num_train_timesteps() - 1, "]"));
  }
  return absl::OkStatus();
}

std::vector<uint64_t> ConsecutiveSeeds(uint64_t first, int64_t count) {
  std::vector<uint64_t> seeds(count);
  for (int64_t i = 0; i < count; ++i) seeds[i] = first + static_cast<uint64_t>(i);
  return seeds;
}

v1::SpectrumMethod ToProtoMethod(SpectrumMethod method) {
  switch (method) {
    case SpectrumMethod::kDense:
      return v1::DENSE;
    case SpectrumMethod::kArnoldi:
      return v1::ARNOLDI;
    case SpectrumMethod::kAuto:
      break;
  }
  return v1::SPECTRUM_METHOD_AUTO;
}

v1::Verdict ToProtoVerdict(Verdict verdict) {
  switch (verdict) {
    case Verdict::kMemorized:
      return v1::MEMORIZED;
    case Verdict::kPartial:
      return v1::PARTIAL;
    case Verdict::kNotMemorized:
      break;
  }
  return v1::NOT_MEMORIZED;
}

void ToSummaryProto(const SpectrumSummary& summary, v1::SpectrumSummary* proto) {
  proto->set_dimension(summary.dimension);
  proto->set_positive_eigenvalues(summary.positive_count);
  proto->set_flat_directions(summary.flat_count);
  proto->set_min_kappa(summary.min_kappa);
  proto->set_max_kappa(summary.max_kappa);
  proto->set_mean_kappa(summary.mean_kappa);
  // Infinite (no peak) is encoded as absent.
  if (std::isfinite(summary.width)) proto->set_width(summary.width);
  if (std::isfinite(summary.radius)) proto->set_radius(summary.radius);
  if (std::isfinite(summary.noise_radius)) proto->set_noise_radius(summary.noise_radius);
  proto->set_partial(summary.partial);
  proto->set_flat_directions_lower_bound(summary.flat_count_is_lower_bound);
  proto->set_unconverged_eigenvalues(summary.unconverged);
}

void ToNearestProto(const NearestNeighbor& nearest, v1::NearestNeighbor* proto) {
  proto->set_index(nearest.index);
  proto->set_d1(nearest.d1);
  proto->set_d2(nearest.d2);
  proto->set_ratio(nearest.ratio);
  proto->set_multiplicity(nearest.multiplicity);
  proto->set_is_copy(nearest.is_copy());
  proto->set_gap(nearest.gap);
}

Verdict ToSampleReport(const SampleCurvature& sample, const ResolvedPolicy& policy,
                       v1::SampleReport* report) {
  report->set_seed(sample.seed);
  const Spectrum& primary = sample.spectra.front();
  report->set_timestep(primary.t);
  report->set_sigma(primary.sigma);
  ToSummaryProto(primary.summary, report->mutable_summary());
  for (size_t k = 1; k < sample.spectra.size(); ++k) {
    v1::SpectrumProfilePoint* point = report->add_profile();
    point->set_timestep(sample.spectra[k].t);
    point->set_sigma(sample.spectra[k].sigma);
    ToSummaryProto(sample.spectra[k].summary, point->mutable_summary());
  }
  if (sample.truth) ToNearestProto(*sample.truth, report->mutable_nearest());
  const Verdict verdict =
      JudgeSample(primary.summary, policy, sample.truth ? &*sample.truth : nullptr);
  report->set_verdict(ToProtoVerdict(verdict));
  return verdict;
}

void ToEarlyMetricsProto(const EarlyMetricSamples& metrics, v1::EarlyMetricsResponse* proto) {
  auto fill = [](const std::vector<double>& values, v1::EarlyMetricValues* out) {
    if (values.empty()) return;  // not computed (forward-only)
    for (double v : values) out->add_values(v);
    out->set_mean(Mean(values));
  };
  proto->set_conditional(metrics.conditional);
  for (int64_t t : metrics.timesteps) proto->add_timesteps(t);
  if (metrics.conditional) {
    fill(metrics.wen, proto->mutable_wen_noise_difference());
    if (!metrics.jeon.empty()) fill(metrics.jeon, proto->mutable_jeon_sharpness());
    fill(metrics.anisotropy_norm, proto->mutable_anisotropy_norm());
    fill(metrics.anisotropy_alignment, proto->mutable_anisotropy_alignment());
    proto->set_alignment_timestep(metrics.alignment_timestep);
  } else {
    fill(metrics.score_norm_squared, proto->mutable_score_norm_squared());
    if (!metrics.hessian_score_squared.empty()) {
      fill(metrics.hessian_score_squared, proto->mutable_hessian_score_squared());
    }
    if (!metrics.hutchinson_trace.empty()) {
      fill(metrics.hutchinson_trace, proto->mutable_hutchinson_trace());
    }
  }
}

}  // namespace memaudit::server
