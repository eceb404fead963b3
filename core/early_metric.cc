#include "early_metric.h"

#include "absl/strings/str_cat.h"

namespace memaudit {
namespace {

constexpr EarlyMetricInfo kMetrics[] = {
    {EarlyMetric::kWenNoiseDifference, "wen_noise_difference", true},
    {EarlyMetric::kJeonSharpness, "jeon_sharpness", true},
    {EarlyMetric::kScoreNormSquared, "score_norm_squared", false},
    {EarlyMetric::kHessianScoreSquared, "hessian_score_squared", false},
    {EarlyMetric::kNegativeTrace, "negative_trace", false},
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
