// Plans: each request turned, once, into validated engine options bound to
// the loaded model it will run on. Handlers parse a request into a plan,
// hand the plan to core/ (or to a job), and encode the result; nothing after
// planning re-reads or re-validates the request.
//
// Planning is usually cheap (no network call except a probe of the score
// kind and, for the one-condition RPCs, encoding a prompt) and thread-safe,
// but prompts are tokenized, and a model's tokenizer.json may be slow
// (bounded: Tokenizer::Encode), so the server plans on its worker pool and
// passes a `stop` bound to the caller's deadline and cancellation. Every
// error is INVALID_ARGUMENT naming the request field, except
// FAILED_PRECONDITION for what the model itself cannot do (e.g. no null
// condition), RESOURCE_EXHAUSTED when a prompt exhausts the tokenizer's
// regex budget, and `stop`'s status. Audits and calibrations keep their
// prompts unencoded: the job encodes each (EncodePrompt) when it reaches it.
#ifndef MEMAUDIT_SERVER_PLANS_H_
#define MEMAUDIT_SERVER_PLANS_H_

#include <ATen/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/audit/sample_curvature.h"
#include "core/early/early_metrics.h"
#include "core/early/mitigation.h"
#include "memaudit/v1/audit_service.pb.h"
#include "proto/audit_defaults.h"
#include "server/model_registry.h"
#include "server/request_options.h"

namespace memaudit::server {

inline constexpr int64_t kMaxSamplesPerCondition = 100000;
inline constexpr int64_t kMaxConditions = 10000;
inline constexpr int64_t kDefaultCalibrationSamples = 4;
inline constexpr int64_t kMaxCalibrationSamples = 1024;
inline constexpr int64_t kMaxSeedsPerRequest = 4096;
inline constexpr int64_t kMaxHutchinsonProbes = 1024;
inline constexpr int64_t kDefaultMitigationSteps = 10;
inline constexpr int64_t kMaxMitigationSteps = 1000;
// The largest |x_i| of a point given to Spectrum.
inline constexpr double kMaxAbsPointValue = 1e6;

// The label-free metric when the request names none (docs/VERDICTS.md
// "Label-free early flags"): the anisotropy score, forward passes only, for
// prompt (embedding) conditions; Jeon's sharpness for class labels, where
// the anisotropy's alignment ran the other way on every trained
// class-conditional model measured.
EarlyMetric DefaultLabelFreeMetric(const v1::Conditioning& conditioning);

// An audit (AuditService.SubmitAudit): conditions × samples_per_condition
// samples, sample i of a condition drawn with seed + i.
struct AuditPlan {
  enum class Mode {
    kFull,             // spectra and verdicts per sample
    kEarlyCalibrated,  // early metrics only, judged by the policy's metric
    kEarlyLabelFree,   // early metrics only, judged as outliers among conditions
  };
  std::shared_ptr<const LoadedModel> model;
  Mode mode = Mode::kFull;
  std::vector<ConditionPlan> conditions;  // at least one
  int64_t samples_per_condition = kDefaultSamplesPerCondition;
  uint64_t seed = 0;
  SampleCurvatureOptions curvature;  // kFull
  // Early metrics per condition: set in the early modes and, alongside a
  // full audit, when the request asks for early_steps.
  std::optional<EarlyMetricOptions> early;
  // The metric of early_outlier_z and of kEarlyLabelFree's flags (a
  // conditional one; AuditRequest.label_free_metric, else
  // DefaultLabelFreeMetric).
  EarlyMetric label_free_metric = EarlyMetric::kAnisotropy;

  int64_t total_samples() const {
    return samples_per_condition * static_cast<int64_t>(conditions.size());
  }
};
// Runs `plan()` (one of the Plan functions below), turning a LibTorch
// exception (e.g. out of device memory while copying a tensor) into
// INTERNAL.
template <typename Planner>
auto PlanNoThrow(Planner plan) -> decltype(plan()) {
  try {
    return plan();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("planning the request failed: ", e.what()));
  }
}

absl::StatusOr<AuditPlan> PlanAudit(const v1::AuditRequest& request,
                                    std::shared_ptr<const LoadedModel> model,
                                    const StopCheck& stop = nullptr);

// Calibration (AuditService.Calibrate): curvature and early metrics of
// labelled conditions.
struct CalibrationPlan {
  std::shared_ptr<const LoadedModel> model;
  std::vector<ConditionPlan> memorized, not_memorized;  // at least 2 each
  int64_t samples_per_condition = kDefaultCalibrationSamples;
  uint64_t seed = 0;
  SampleCurvatureOptions curvature;  // unused when early_only
  EarlyMetricOptions early;
  bool early_only = false;  // no spectra, no curvature metrics
};
absl::StatusOr<CalibrationPlan> PlanCalibration(const v1::CalibrationRequest& request,
                                                std::shared_ptr<const LoadedModel> model,
                                                const StopCheck& stop = nullptr);

// One spectrum (AuditService.Spectrum) at a given point x and timestep, or
// at a sampled point (seed; timestep given or the default evaluation step).
struct SpectrumPlan {
  std::shared_ptr<const LoadedModel> model;
  ConditionPlan condition;
  SampleCurvatureOptions curvature;  // timesteps: {t} when given
  std::optional<uint64_t> seed;      // else x
  at::Tensor x;                      // [1, *sample_shape] on the model's device
  int64_t timestep = 0;              // with x
  bool return_point = false;
  std::optional<EarlyMetricOptions> early;  // early_steps > 0 (seed only)
};
absl::StatusOr<SpectrumPlan> PlanSpectrum(const v1::SpectrumRequest& request,
                                          std::shared_ptr<const LoadedModel> model,
                                          const StopCheck& stop = nullptr);

// Samples (AuditService.Sample / StreamSamples), one per seed.
struct SamplePlan {
  std::shared_ptr<const LoadedModel> model;
  ConditionPlan condition;
  SamplerOptions sampler;
  std::vector<uint64_t> seeds;  // 1 to kMaxSeedsPerRequest
  bool decode = false;          // the model has a latent decoder
};
// Sampled points (float32, CPU) and, when decoded, their images.
struct SampleBatch {
  at::Tensor samples;  // [B, *sample_shape]
  at::Tensor images;   // [B, *latent.image_shape], or undefined
};
absl::StatusOr<SamplePlan> PlanSample(const v1::SampleRequest& request,
                                      std::shared_ptr<const LoadedModel> model,
                                      const StopCheck& stop = nullptr);

// Early metrics (AuditService.EarlyMetrics), one generation per seed.
struct EarlyMetricsPlan {
  std::shared_ptr<const LoadedModel> model;
  ConditionPlan condition;
  EarlyMetricOptions options;
  std::vector<uint64_t> seeds;  // 1 to kMaxSeedsPerRequest
};
absl::StatusOr<EarlyMetricsPlan> PlanEarlyMetrics(const v1::EarlyMetricsRequest& request,
                                                  std::shared_ptr<const LoadedModel> model,
                                                  const StopCheck& stop = nullptr);

// The guard against copying (AuditService.Mitigate): per seed, the seed's
// x_T moved by MitigateInitialNoise, the samples from both, and their
// verdicts as an audit gives them.
struct MitigatePlan {
  std::shared_ptr<const LoadedModel> model;
  ConditionPlan condition;  // encoded
  // The sampling the guard protects and the spectra behind the verdicts
  // (every sampling state kept: the evaluation step is picked after).
  SampleCurvatureOptions curvature;
  MitigationOptions guard;      // guard.sampler == curvature.sampler
  std::vector<uint64_t> seeds;  // 1 to kMaxSeedsPerRequest
  bool decode = false;          // the model has a latent decoder
};
absl::StatusOr<MitigatePlan> PlanMitigate(const v1::MitigateRequest& request,
                                          std::shared_ptr<const LoadedModel> model,
                                          const StopCheck& stop = nullptr);

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_PLANS_H_
