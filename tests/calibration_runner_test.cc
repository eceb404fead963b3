// The suggested verdict_policy block read back as a model config would read
// it: thresholds are observed scores and must flag themselves. No gRPC.
#include "server/calibration_runner.h"

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "core/verdict/verdict.h"
#include "memaudit/v1/model_config.pb.h"

namespace memaudit::server {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

v1::CalibratedMetric* AddMetric(v1::CalibrationResponse& response, const std::string& name,
                                bool higher_is_memorized, double auc, double threshold) {
  v1::CalibratedMetric* metric = response.add_metrics();
  metric->set_name(name);
  metric->set_higher_is_memorized(higher_is_memorized);
  metric->set_auc(auc);
  metric->set_threshold(threshold);
  metric->set_youden_threshold(threshold);
  return metric;
}

v1::VerdictPolicy ReadBack(const std::string& block) {
  v1::ModelConfig config;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(block, &config)) << block;
  EXPECT_TRUE(ValidatePolicy(config.verdict_policy()).ok()) << block;
  return config.verdict_policy();
}

// Thresholds that six significant digits would move: the observed width
// 0.1054092553389459 (√10/30) in units of a data scale of √2, and an early
// score of 1/3. Read back, a sample exactly at either is flagged.
TEST(SuggestedPolicyTest, ThresholdsReadBackExactlyAndFlagTheirOwnScores) {
  const double scale = std::sqrt(2.0);
  const double observed_width = std::sqrt(10.0) / 30.0;
  const double observed_early = 1.0 / 3.0;
  v1::CalibrationResponse response;
  AddMetric(response, "width", /*higher_is_memorized=*/false, 1.0, observed_width)
      ->set_youden_threshold(2 * observed_width);
  AddMetric(response, "wen_noise_difference", true, 0.9, observed_early);
  const v1::VerdictPolicy read = ReadBack(SuggestedPolicy(response, scale));
  EXPECT_EQ(read.data_scale(), scale);
  EXPECT_EQ(read.early_metric(), "wen_noise_difference");
  EXPECT_EQ(read.early_threshold(), observed_early);
  EXPECT_GE(observed_early, read.early_threshold());  // the early rule: mean ≥ threshold

  const ResolvedPolicy policy = ResolvePolicy(read, nullptr);
  ASSERT_EQ(policy.rule, VerdictRule::kWidth);
  SpectrumSummary summary;
  summary.width = observed_width;
  EXPECT_EQ(JudgeSample(summary, policy), Verdict::kMemorized);
  summary.width = 1.5 * observed_width;
  EXPECT_EQ(JudgeSample(summary, policy), Verdict::kPartial);
  summary.width = 2.5 * observed_width;
  EXPECT_EQ(JudgeSample(summary, policy), Verdict::kNotMemorized);
}

// A metric that no cut keeps at FPR ≤ 1% has an infinite threshold: the
// block suggests the best metric that has a finite one, or none, and always
// loads.
TEST(SuggestedPolicyTest, AMetricWithoutAFiniteThresholdIsNeverSuggested) {
  v1::CalibrationResponse response;
  AddMetric(response, "jeon_sharpness", true, 0.99, kInf);
  AddMetric(response, "wen_noise_difference", true, 0.8, 2.5);
  EXPECT_EQ(ReadBack(SuggestedPolicy(response, 1.0)).early_metric(), "wen_noise_difference");

  response.mutable_metrics(1)->set_threshold(kInf);
  const std::string block = SuggestedPolicy(response, 1.0);
  EXPECT_EQ(ReadBack(block).early_metric(), "") << block;
  EXPECT_NE(block.find("no early metric"), std::string::npos) << block;
}

}  // namespace
}  // namespace memaudit::server
