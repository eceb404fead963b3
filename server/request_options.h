// Translation of request fields into engine options, with validation
// errors (INVALID_ARGUMENT) that name the request field, and of engine
// results back into response messages. Used by the plans (plans.h, which
// the handlers call) and the job runners (audit_runner.h,
// mitigation_runner.h).
#ifndef MEMAUDIT_SERVER_REQUEST_OPTIONS_H_
#define MEMAUDIT_SERVER_REQUEST_OPTIONS_H_

#include <ATen/Tensor.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/audit/sample_curvature.h"
#include "core/early/early_metrics.h"
#include "core/early/token_attribution.h"
#include "core/model/denoiser.h"
#include "core/model/sampler.h"
#include "core/spectra/spectrum.h"
#include "core/verdict/reference_set.h"
#include "core/verdict/verdict.h"
#include "memaudit/v1/audit_service.pb.h"
#include "server/model_registry.h"

namespace memaudit::server {

// `field` prefixes error messages ("sampling.num_steps: ...").
absl::StatusOr<SamplerOptions> ToSamplerOptions(const v1::SamplingOptions& sampling,
                                                const NoiseSchedule& schedule,
                                                const std::string& field);

// Sampling plus curvature options for spectra on `model`: every field
// range-checked, the method checked against the model's dimension and the
// server's dense limit (model.max_dense_dimension), symmetrize only for
// dense spectra. Errors name "sampling.…" and "curvature.…".
absl::StatusOr<SampleCurvatureOptions> ToCurvatureOptions(const v1::SamplingOptions& sampling,
                                                          const v1::CurvatureOptions& curvature,
                                                          const LoadedModel& model);

// A validated condition: its label for reports and its prepared tensor for
// one sample (labels [1], embeddings [1, …], or undefined for the null
// condition of an unconditional model).
//
// A prompt is tokenized when planned (so bad text fails the request at
// once) but encoded only by EncodePrompt: a job encodes each prompt when it
// reaches it, so an audit of thousands of prompts neither holds thousands of
// embeddings nor runs the text encoder inside the RPC that submits it.
struct ConditionPlan {
  v1::Condition condition;
  // Condition.name when given; else "class 3", "null", "none",
  // "embedding", or the prompt in quotes, cut to 60 characters.
  std::string label;
  std::string field;  // the request field, e.g. "conditions[2]"
  at::Tensor row;     // undefined for a prompt until EncodePrompt
  bool needs_encoding() const { return condition.has_prompt() && !row.defined(); }
};
// `stop` is asked while a prompt is tokenized (a tokenizer.json regex may
// be slow: Tokenizer::Encode).
absl::StatusOr<ConditionPlan> ToConditionPlan(const v1::Condition& condition,
                                              const Denoiser& denoiser, const std::string& field,
                                              const StopCheck& stop = nullptr);
// `plan` with its prompt encoded (one text-encoder call); other plans are
// returned as they are. Errors name plan.field.
absl::StatusOr<ConditionPlan> EncodePrompt(ConditionPlan plan, const Denoiser& denoiser,
                                           const StopCheck& stop = nullptr);
// The token attribution (core/early/token_attribution.h) of an encoded
// prompt condition for one sample per seed, as the report's message: the
// prompt's own tokens with their deletion scores and shares, and Wen's
// gradient when the encoder allows one (else gradient_unavailable says
// why). The deletions take `rows_per_call` rows per network call.
// Nothing (no error) for other conditions. Errors of
// ComputeTokenDeletions and of the tokenizer, naming plan.field; `stop`'s.
absl::StatusOr<std::optional<v1::TokenAttribution>> AttributePromptTokens(
    const ConditionPlan& plan, const Denoiser& denoiser, const std::vector<uint64_t>& seeds,
    const SamplerOptions& sampler, const StopCheck& stop = nullptr,
    int64_t rows_per_call = kDeletionBatch);
// The condition repeated for `batch` samples (undefined stays undefined).
// A prompt must have been encoded.
at::Tensor RepeatCondition(const ConditionPlan& condition, int64_t batch);

// Checks that t is a training timestep of the schedule.
absl::Status CheckTimestep(int64_t t, const NoiseSchedule& schedule, const std::string& field);

// seed, seed + 1, …, seed + count − 1 (sample i of an audit uses seed + i).
std::vector<uint64_t> ConsecutiveSeeds(uint64_t first, int64_t count);

v1::SpectrumMethod ToProtoMethod(SpectrumMethod method);
v1::Verdict ToProtoVerdict(Verdict verdict);
void ToSummaryProto(const SpectrumSummary& summary, v1::SpectrumSummary* proto);
void ToNearestProto(const NearestNeighbor& nearest, v1::NearestNeighbor* proto);
// The report of a measured sample (its first spectrum's summary, the
// others as a profile, its nearest neighbour) with its verdict under
// `policy`, which it also returns.
Verdict ToSampleReport(const SampleCurvature& sample, const ResolvedPolicy& policy,
                       v1::SampleReport* report);
// Fills `proto` (conditional flag, timesteps, each metric's per-generation
// values and mean) from computed early metrics.
void ToEarlyMetricsProto(const EarlyMetricSamples& metrics, v1::EarlyMetricsResponse* proto);

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_REQUEST_OPTIONS_H_
