#include "core/early/early_metric.h"

#include "absl/strings/str_cat.h"

namespace memaudit {
namespace {

constexpr EarlyMetricInfo kMetrics[] = {
    // name, conditional, derivative, signed_values, among_conditions
    {EarlyMetric::kWenNoiseDifference, "wen_noise_difference", true, false, false, false},
    {EarlyMetric::kJeonSharpness, "jeon_sharpness", true, true, false, false},
    {EarlyMetric::kScoreNormSquared, "score_norm_squared", false, false, false, false},
    {EarlyMetric::kHessianScoreSquared, "hessian_score_squared", false, true, false, false},
    {EarlyMetric::kNegativeTrace, "negative_trace", false, true, true, false},
    {EarlyMetric::kAnisotropyNorm, "anisotropy_norm", true, false, false, false},
    {EarlyMetric::kAnisotropyAlignment, "anisotropy_alignment", true, false, true, false},
    {EarlyMetric::kAnisotropy, "anisotropy", true, false, true, true},
};

}  // namespace

absl::Span<const EarlyMetricInfo> AllEarlyMetrics() { return kMetrics; }

const EarlyMetricInfo& EarlyMetricInfoOf(EarlyMetric metric) {
  for (const EarlyMetricInfo& info : kMetrics) {
    if (info.metric == metric) return info;
  }
  return kMetrics[0];  // unreachable: the table covers the enum
}

absl::StatusOr<EarlyMetric> ParseEarlyMetric(absl::string_view name) {
  std::string known;
  for (const EarlyMetricInfo& info : kMetrics) {
    if (name == info.name) return info.metric;
    absl::StrAppend(&known, known.empty() ? "" : ", ", info.name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown early metric \"", name, "\" (known: ", known, ")"));
}

}  // namespace memaudit
