#include "server/plans.h"

#include <ATen/ATen.h>

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/base/status_macros.h"
#include "core/early/calibration.h"
#include "server/tensor_codec.h"

namespace memaudit::server {
namespace {

absl::Status RequireModel(const std::shared_ptr<const LoadedModel>& model) {
  if (model == nullptr) return absl::FailedPreconditionError("model: not loaded");
  return absl::OkStatus();
}

absl::Status CheckCount(int64_t count, int64_t low, int64_t high, const std::string& field) {
  if (count < low || count > high) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": must be in [", low, ", ", high, "], got ", count));
  }
  return absl::OkStatus();
}

// The score kind must be computable for this condition (e.g. GUIDED needs a
// conditional model): probed once at the last training timestep.
absl::Status CheckScoreKind(const Denoiser& denoiser, const ConditionPlan& condition,
                            const SampleCurvatureOptions& options) {
  // A prompt is encoded later; the null condition stands in for it here,
  // since what is checked is the model's ability, not the condition's value.
  const at::Tensor row =
      condition.needs_encoding() ? denoiser.network().NullCondition(1) : condition.row;
  auto field = denoiser.ScoreField(denoiser.schedule().num_train_timesteps() - 1,
                                   options.score_kind, row, options.sampler.guidance);
  if (!field.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("curvature.score_kind: ", field.status().message()));
  }
  return absl::OkStatus();
}

// Conditions of a request field (`name`), each planned and, when
// `curvature` is given, checked against its score kind.
absl::StatusOr<std::vector<ConditionPlan>> PlanConditions(
    const google::protobuf::RepeatedPtrField<v1::Condition>& conditions, const std::string& name,
    const Denoiser& denoiser, const SampleCurvatureOptions* curvature, const StopCheck& stop) {
  std::vector<ConditionPlan> plans;
  plans.reserve(conditions.size());
  for (int i = 0; i < conditions.size(); ++i) {
    ASSIGN_OR_RETURN(ConditionPlan plan, ToConditionPlan(conditions[i], denoiser,
                                                         absl::StrCat(name, "[", i, "]"), stop));
    if (curvature != nullptr) RETURN_IF_ERROR(CheckScoreKind(denoiser, plan, *curvature));
    plans.push_back(std::move(plan));
  }
  return plans;
}

// Early metric options over `steps` first steps (0: the default) of the
// sampler's schedule; `field` names the request's steps field.
absl::StatusOr<EarlyMetricOptions> ToEarlyOptions(const SamplerOptions& sampler, int64_t steps,
                                                  const std::string& field) {
  EarlyMetricOptions options;
  options.sampler = sampler;
  RETURN_IF_ERROR(CheckCount(steps, 0, sampler.num_steps,
                             field + " (0: default 1; at most "
                                     "sampling.num_steps)"));
  if (steps > 0) options.steps = steps;
  return options;
}

// Whether the early metrics of `condition` are the conditional ones (Wen,
// Jeon): a conditional model and a condition other than the null one, as
// ComputeEarlyMetrics decides.
bool IsRealCondition(const ConditionPlan& condition, const DiffusionNetwork& network) {
  if (condition.needs_encoding()) return true;
  if (!network.conditional() || !condition.row.defined()) return false;
  const at::Tensor null_condition = network.NullCondition(1);
  return !null_condition.defined() || !at::equal(condition.row, null_condition);
}

// Requests that ask for decoded images need a latent decoder.
absl::Status CheckDecode(const LoadedModel& model) {
  if (model.network->latent_decoder() == nullptr) {
    return absl::InvalidArgumentError(
        "decode: the model has no latent decoder (ModelConfig.latent and vae_decoder.pt)");
  }
  return absl::OkStatus();
}

absl::Status CheckSeeds(int count) {
  if (count < 1 || count > kMaxSeedsPerRequest) {
    return absl::InvalidArgumentError(
        absl::StrCat("seeds: give 1 to ", kMaxSeedsPerRequest, " seeds, got ", count));
  }
  return absl::OkStatus();
}

// An x given in the request: [*sample_shape] or [1, *sample_shape].
absl::StatusOr<at::Tensor> ToPoint(const v1::Tensor& message, const DiffusionNetwork& network) {
  ASSIGN_OR_RETURN(const at::Tensor x, DecodeTensor(message, "x"));
  const auto& shape = network.config().sample_shape();
  std::vector<int64_t> expected(shape.begin(), shape.end());
  std::vector<int64_t> batched = expected;
  batched.insert(batched.begin(), 1);
  if (x.sizes().vec() != expected && x.sizes().vec() != batched) {
    return absl::InvalidArgumentError(absl::StrCat(
        "x.shape: expected [", absl::StrJoin(expected, ", "), "] or [",
        absl::StrJoin(batched, ", "), "], got [", absl::StrJoin(x.sizes(), ", "), "]"));
  }
  // Diffusion states are O(1) (data in [-1, 1] plus unit-variance noise);
  // far larger values overflow the score's Jacobian into Inf.
  if (x.numel() > 0) {
    const double largest = x.abs().max().item<double>();
    if (largest > kMaxAbsPointValue) {
      return absl::InvalidArgumentError(absl::StrCat(
          "x.data: holds a value of magnitude ", largest,
          "; a diffusion state's values are O(1) (at most ", kMaxAbsPointValue, " accepted)"));
    }
  }
  return x.reshape(batched).to(network.device(), network.dtype());
}

// A valid timestep that a sampled trajectory reaches: at or below its
// first sampling step (before any work: the sampler would refuse it only
// after sampling).
absl::Status CheckSampledTimestep(int64_t t, const SamplerOptions& sampler,
                                  const NoiseSchedule& schedule, const std::string& field) {
  RETURN_IF_ERROR(CheckTimestep(t, schedule, field));
  ASSIGN_OR_RETURN(
      const std::vector<int64_t> sampled,
      LeadingTimesteps(schedule.num_train_timesteps(), sampler.num_steps, sampler.steps_offset));
  if (t > sampled.front()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": timestep ", t, " is above the first sampling step ", sampled.front(),
                     " (", sampler.num_steps, " steps)"));
  }
  return absl::OkStatus();
}

}  // namespace

EarlyMetric DefaultLabelFreeMetric(const v1::Conditioning& conditioning) {
  return conditioning.kind() == v1::Conditioning::CLASS_LABEL ? EarlyMetric::kJeonSharpness
                                                              : EarlyMetric::kAnisotropy;
}

absl::StatusOr<AuditPlan> PlanAudit(const v1::AuditRequest& request,
                                    std::shared_ptr<const LoadedModel> model,
                                    const StopCheck& stop) {
  RETURN_IF_ERROR(RequireModel(model));
  const Denoiser& denoiser = *model->denoiser;
  AuditPlan plan;
  RETURN_IF_ERROR(CheckCount(request.samples_per_condition(), 0, kMaxSamplesPerCondition,
                             "samples_per_condition"));
  if (request.samples_per_condition() > 0) {
    plan.samples_per_condition = request.samples_per_condition();
  }
  RETURN_IF_ERROR(CheckCount(request.conditions_size(), 0, kMaxConditions, "conditions"));
  plan.seed = request.seed();
  ASSIGN_OR_RETURN(plan.curvature,
                   ToCurvatureOptions(request.sampling(), request.curvature(), *model));
  if (plan.curvature.arnoldi.target != EigenTarget::kLargestReal) {
    return absl::InvalidArgumentError(
        "curvature.target: audits need the LARGEST_REAL end (flat count, n+, width)");
  }
  for (int i = 0; i < request.timesteps_size(); ++i) {
    RETURN_IF_ERROR(CheckSampledTimestep(request.timesteps(i), plan.curvature.sampler,
                                         denoiser.schedule(), absl::StrCat("timesteps[", i, "]")));
  }
  plan.curvature.timesteps.assign(request.timesteps().begin(), request.timesteps().end());
  if (request.conditions_size() > 0) {
    ASSIGN_OR_RETURN(plan.conditions,
                     PlanConditions(request.conditions(), "conditions", denoiser,
                                    request.early_only() ? nullptr : &plan.curvature, stop));
  } else {
    google::protobuf::RepeatedPtrField<v1::Condition> none;
    none.Add();
    ASSIGN_OR_RETURN(plan.conditions,
                     PlanConditions(none, "conditions", denoiser,
                                    request.early_only() ? nullptr : &plan.curvature, stop));
  }
  if (request.early_only()) {
    if (model->policy.early_metric.has_value()) {
      plan.mode = AuditPlan::Mode::kEarlyCalibrated;
      // The calibrated metric must exist for every condition.
      const EarlyMetricInfo& metric = EarlyMetricInfoOf(*model->policy.early_metric);
      for (size_t i = 0; i < plan.conditions.size(); ++i) {
        if (IsRealCondition(plan.conditions[i], *model->network) != metric.conditional) {
          return absl::InvalidArgumentError(
              absl::StrCat("conditions[", i, "]: the model's verdict_policy.early_metric \"",
                           metric.name, "\" is ",
                           metric.conditional ? "for real conditions (against the null one)"
                                              : "for unconditional generation",
                           "; ", plan.conditions[i].label, " is not"));
        }
      }
    } else if (model->network->conditional() && plan.conditions.size() >= kMinOutlierPopulation) {
      plan.mode = AuditPlan::Mode::kEarlyLabelFree;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "early_only: the model's verdict_policy has no early_metric (run `memaudit calibrate` "
          "for calibrated flags), and label-free flags need at least ",
          kMinOutlierPopulation, " conditions of a conditional model to compare"));
    }
  }
  ASSIGN_OR_RETURN(EarlyMetricOptions early,
                   ToEarlyOptions(plan.curvature.sampler, request.early_steps(), "early_steps"));
  plan.label_free_metric = DefaultLabelFreeMetric(model->network->config().conditioning());
  if (!request.label_free_metric().empty()) {
    absl::StatusOr<EarlyMetric> metric = ParseEarlyMetric(request.label_free_metric());
    if (!metric.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("label_free_metric: ", metric.status().message()));
    }
    if (!EarlyMetricInfoOf(*metric).conditional) {
      return absl::InvalidArgumentError(absl::StrCat(
          "label_free_metric: \"", request.label_free_metric(),
          "\" is for unconditional generation; label-free flags compare real conditions"));
    }
    plan.label_free_metric = *metric;
  }
  // A label-free screen whose metric needs no derivative runs forward
  // passes only: that is what makes it cheap.
  if (plan.mode == AuditPlan::Mode::kEarlyLabelFree &&
      !EarlyMetricInfoOf(plan.label_free_metric).derivative) {
    early.derivative_metrics = false;
  }
  if (request.early_only() || request.early_steps() > 0) plan.early = early;
  plan.model = std::move(model);
  return plan;
}

absl::StatusOr<CalibrationPlan> PlanCalibration(const v1::CalibrationRequest& request,
                                                std::shared_ptr<const LoadedModel> model,
                                                const StopCheck& stop) {
  RETURN_IF_ERROR(RequireModel(model));
  if (request.memorized_size() < 2 || request.not_memorized_size() < 2) {
    return absl::InvalidArgumentError(
        "memorized, not_memorized: give at least 2 labelled conditions in each");
  }
  RETURN_IF_ERROR(CheckCount(request.memorized_size() + request.not_memorized_size(), 4,
                             kMaxConditions, "memorized + not_memorized"));
  CalibrationPlan plan;
  RETURN_IF_ERROR(CheckCount(request.samples_per_condition(), 0, kMaxCalibrationSamples,
                             "samples_per_condition"));
  if (request.samples_per_condition() > 0) {
    plan.samples_per_condition = request.samples_per_condition();
  }
  plan.seed = request.seed();
  ASSIGN_OR_RETURN(plan.curvature,
                   ToCurvatureOptions(request.sampling(), request.curvature(), *model));
  if (plan.curvature.arnoldi.target != EigenTarget::kLargestReal) {
    return absl::InvalidArgumentError(
        "curvature.target: calibration needs the LARGEST_REAL end (flat count, n+, width)");
  }
  ASSIGN_OR_RETURN(plan.early,
                   ToEarlyOptions(plan.curvature.sampler, request.early_steps(), "early_steps"));
  plan.early_only = request.early_only();
  const SampleCurvatureOptions* curvature = plan.early_only ? nullptr : &plan.curvature;
  ASSIGN_OR_RETURN(plan.memorized, PlanConditions(request.memorized(), "memorized",
                                                  *model->denoiser, curvature, stop));
  ASSIGN_OR_RETURN(plan.not_memorized, PlanConditions(request.not_memorized(), "not_memorized",
                                                      *model->denoiser, curvature, stop));
  plan.model = std::move(model);
  return plan;
}

absl::StatusOr<SpectrumPlan> PlanSpectrum(const v1::SpectrumRequest& request,
                                          std::shared_ptr<const LoadedModel> model,
                                          const StopCheck& stop) {
  RETURN_IF_ERROR(RequireModel(model));
  const Denoiser& denoiser = *model->denoiser;
  SpectrumPlan plan;
  ASSIGN_OR_RETURN(plan.curvature,
                   ToCurvatureOptions(request.sampling(), request.curvature(), *model));
  ASSIGN_OR_RETURN(plan.condition,
                   ToConditionPlan(request.condition(), denoiser, "condition", stop));
  RETURN_IF_ERROR(CheckScoreKind(denoiser, plan.condition, plan.curvature));
  if (request.has_timestep()) {
    RETURN_IF_ERROR(CheckTimestep(request.timestep(), denoiser.schedule(), "timestep"));
  }
  switch (request.point_case()) {
    case v1::SpectrumRequest::kX: {
      if (!request.has_timestep()) {
        return absl::InvalidArgumentError("timestep: required when x is given");
      }
      ASSIGN_OR_RETURN(plan.x, ToPoint(request.x(), denoiser.network()));
      plan.timestep = request.timestep();
      break;
    }
    case v1::SpectrumRequest::kSeed:
      plan.seed = request.seed();
      if (request.has_timestep()) {
        RETURN_IF_ERROR(CheckSampledTimestep(request.timestep(), plan.curvature.sampler,
                                             denoiser.schedule(), "timestep"));
        plan.curvature.timesteps = {request.timestep()};
      }
      break;
    case v1::SpectrumRequest::POINT_NOT_SET:
      return absl::InvalidArgumentError("point: give x (with timestep) or a seed");
  }
  plan.return_point = request.return_point();
  plan.curvature.keep_points = plan.return_point;
  if (request.early_steps() != 0) {
    if (!plan.seed.has_value()) {
      return absl::InvalidArgumentError("early_steps: needs a sampled point (seed)");
    }
    ASSIGN_OR_RETURN(plan.early,
                     ToEarlyOptions(plan.curvature.sampler, request.early_steps(), "early_steps"));
  }
  // Last: encoding a prompt is the one network call of planning.
  ASSIGN_OR_RETURN(plan.condition, EncodePrompt(std::move(plan.condition), *model->denoiser, stop));
  plan.model = std::move(model);
  return plan;
}

absl::StatusOr<SamplePlan> PlanSample(const v1::SampleRequest& request,
                                      std::shared_ptr<const LoadedModel> model,
                                      const StopCheck& stop) {
  RETURN_IF_ERROR(RequireModel(model));
  RETURN_IF_ERROR(CheckSeeds(request.seeds_size()));
  SamplePlan plan;
  ASSIGN_OR_RETURN(plan.sampler,
                   ToSamplerOptions(request.sampling(), model->denoiser->schedule(), "sampling"));
  ASSIGN_OR_RETURN(plan.condition,
                   ToConditionPlan(request.condition(), *model->denoiser, "condition", stop));
  plan.sampler.keep_states = false;  // only the final samples are returned
  if (request.decode()) {
    RETURN_IF_ERROR(CheckDecode(*model));
    plan.decode = true;
  }
  plan.seeds.assign(request.seeds().begin(), request.seeds().end());
  // Last: encoding a prompt is the one network call of planning.
  ASSIGN_OR_RETURN(plan.condition, EncodePrompt(std::move(plan.condition), *model->denoiser, stop));
  plan.model = std::move(model);
  return plan;
}

absl::StatusOr<EarlyMetricsPlan> PlanEarlyMetrics(const v1::EarlyMetricsRequest& request,
                                                  std::shared_ptr<const LoadedModel> model,
                                                  const StopCheck& stop) {
  RETURN_IF_ERROR(RequireModel(model));
  RETURN_IF_ERROR(CheckSeeds(request.seeds_size()));
  EarlyMetricsPlan plan;
  ASSIGN_OR_RETURN(const SamplerOptions sampler,
                   ToSamplerOptions(request.sampling(), model->denoiser->schedule(), "sampling"));
  ASSIGN_OR_RETURN(plan.options, ToEarlyOptions(sampler, request.steps(), "steps"));
  RETURN_IF_ERROR(CheckCount(request.hutchinson_probes(), 0, kMaxHutchinsonProbes,
                             "hutchinson_probes (0: default 8)"));
  if (request.hutchinson_probes() > 0) plan.options.hutchinson_probes = request.hutchinson_probes();
  plan.options.derivative_metrics = !request.forward_only();
  ASSIGN_OR_RETURN(plan.condition,
                   ToConditionPlan(request.condition(), *model->denoiser, "condition", stop));
  plan.seeds.assign(request.seeds().begin(), request.seeds().end());
  // Last: encoding a prompt is the one network call of planning.
  ASSIGN_OR_RETURN(plan.condition, EncodePrompt(std::move(plan.condition), *model->denoiser, stop));
  plan.model = std::move(model);
  return plan;
}

absl::StatusOr<MitigatePlan> PlanMitigate(const v1::MitigateRequest& request,
                                          std::shared_ptr<const LoadedModel> model,
                                          const StopCheck& stop) {
  RETURN_IF_ERROR(RequireModel(model));
  RETURN_IF_ERROR(CheckSeeds(request.seeds_size()));
  const Denoiser& denoiser = *model->denoiser;
  MitigatePlan plan;
  ASSIGN_OR_RETURN(plan.curvature,
                   ToCurvatureOptions(request.sampling(), request.curvature(), *model));
  if (plan.curvature.arnoldi.target != EigenTarget::kLargestReal) {
    return absl::InvalidArgumentError(
        "curvature.target: verdicts need the LARGEST_REAL end (flat count, n+, width)");
  }
  ASSIGN_OR_RETURN(plan.condition,
                   ToConditionPlan(request.condition(), denoiser, "condition", stop));
  RETURN_IF_ERROR(CheckScoreKind(denoiser, plan.condition, plan.curvature));
  if (IsRealCondition(plan.condition, *model->network)) {
    // The guard lowers Jeon's ‖H^Δ s^Δ‖, against the null condition.
    if (!model->network->NullCondition(1).defined()) {
      return absl::FailedPreconditionError(
          absl::StrCat("condition: the guard measures ", plan.condition.label,
                       " against the null condition, and the model has none (",
                       DiffusionNetwork::kNullConditionFile, ")"));
    }
    if (plan.curvature.sampler.guidance == 0.0) {
      return absl::InvalidArgumentError(
          "sampling.guidance_scale: 0 samples without the condition, so the guard's metric "
          "(against the null condition) would not bear on the samples; use a guidance above 0 "
          "or no condition");
    }
  }
  plan.guard.sampler = plan.curvature.sampler;
  plan.guard.max_steps = kDefaultMitigationSteps;
  if (request.has_max_steps()) {
    RETURN_IF_ERROR(CheckCount(request.max_steps(), 1, kMaxMitigationSteps, "max_steps"));
    plan.guard.max_steps = request.max_steps();
  }
  if (request.has_step_size()) {
    if (!(request.step_size() > 0 && request.step_size() <= 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("step_size: a fraction of |x_T| in (0, 1], got ", request.step_size()));
    }
    plan.guard.step_size = request.step_size();
  }
  if (!(request.target_sharpness() >= 0 && std::isfinite(request.target_sharpness()))) {
    return absl::InvalidArgumentError(
        absl::StrCat("target_sharpness: must be finite and >= 0 (0: take max_steps), got ",
                     request.target_sharpness()));
  }
  plan.guard.target = request.target_sharpness();
  if (request.decode()) {
    RETURN_IF_ERROR(CheckDecode(*model));
    plan.decode = true;
  }
  plan.seeds.assign(request.seeds().begin(), request.seeds().end());
  // Last: encoding a prompt is the one network call of planning.
  ASSIGN_OR_RETURN(plan.condition, EncodePrompt(std::move(plan.condition), denoiser, stop));
  plan.model = std::move(model);
  return plan;
}

}  // namespace memaudit::server
