// Translation of request messages into engine options, with validation
// errors (INVALID_ARGUMENT) that name the request field.
#ifndef MEMAUDIT_SERVER_REQUEST_OPTIONS_H_
#define MEMAUDIT_SERVER_REQUEST_OPTIONS_H_

#include <ATen/Tensor.h>

#include <string>

#include "absl/status/statusor.h"
#include "curvature.h"
#include "denoiser.h"
#include "early_metrics.h"
#include "memaudit/v1/audit_service.pb.h"
#include "sample_curvature.h"
#include "sampler.h"
#include "spectrum.h"

namespace memaudit::server {

absl::StatusOr<SamplerOptions> ToSamplerOptions(const v1::SamplingOptions& sampling,
                                                const NoiseSchedule& schedule,
                                                const std::string& field);

struct CurvatureSettings {
  ScoreKind score_kind = ScoreKind::kConditional;
  SpectrumOptions spectrum;
  JacobianOptions jacobian;
  SpectrumMethod method = SpectrumMethod::kAuto;
  ArnoldiOptions arnoldi;
};
absl::StatusOr<CurvatureSettings> ToCurvatureSettings(const v1::CurvatureOptions& options,
                                                      const std::string& field);

// The condition as a batch of `batch` rows for `denoiser`'s model (labels,
// embeddings, or undefined for unconditional models and the null
// condition), validated.
absl::StatusOr<at::Tensor> ToConditionBatch(const v1::Condition& condition,
                                            const Denoiser& denoiser, int64_t batch,
                                            const std::string& field);

// "class 3", "null", "none", "embedding".
std::string ConditionLabel(const v1::Condition& condition);

// Checks that t is a training timestep of the schedule.
absl::Status CheckTimestep(int64_t t, const NoiseSchedule& schedule, const std::string& field);

void ToSummaryProto(const SpectrumSummary& summary, v1::SpectrumSummary* proto);

// Fills `proto` (conditional flag, timesteps, each metric's per-generation
// values and mean) from computed early metrics.
void ToEarlyMetricsProto(const EarlyMetricSamples& metrics, v1::EarlyMetricsResponse* proto);

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_REQUEST_OPTIONS_H_
