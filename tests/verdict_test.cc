#include "verdict.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <limits>

namespace memaudit {
namespace {

SpectrumSummary Summary(int64_t positive, double width) {
  SpectrumSummary s;
  s.positive_count = positive;
  s.width = width;
  return s;
}

TEST(VerdictTest, SignStructureThenWidth) {
  ResolvedPolicy policy;  // defaults: n+ <= 0, 0.1 and 0.25 of scale 1
  EXPECT_EQ(JudgeSample(Summary(0, 0.01), policy), Verdict::kMemorized);
  EXPECT_EQ(JudgeSample(Summary(0, 0.2), policy), Verdict::kPartial);
  EXPECT_EQ(JudgeSample(Summary(0, 0.5), policy), Verdict::kNotMemorized);
  EXPECT_EQ(JudgeSample(Summary(0, std::numeric_limits<double>::infinity()), policy),
            Verdict::kNotMemorized);
  // Any upward curvature: a saddle, never a copy, however narrow.
  EXPECT_EQ(JudgeSample(Summary(1, 0.0), policy), Verdict::kNotMemorized);
  policy.max_positive_eigenvalues = 2;
  EXPECT_EQ(JudgeSample(Summary(2, 0.0), policy), Verdict::kMemorized);
}

TEST(VerdictTest, ConditionVerdict) {
  ResolvedPolicy policy;
  EXPECT_EQ(JudgeCondition(8, 0, 16, policy), Verdict::kMemorized);
  EXPECT_EQ(JudgeCondition(7, 0, 16, policy), Verdict::kPartial);
  EXPECT_EQ(JudgeCondition(0, 1, 16, policy), Verdict::kPartial);
  EXPECT_EQ(JudgeCondition(0, 0, 16, policy), Verdict::kNotMemorized);
}

TEST(VerdictTest, PolicyDefaultsAndDataScale) {
  // Two items per dimension at ±2 and ±0: per-element std 2 and 0 → RMS √2.
  at::Tensor items = at::tensor({2.0, 0.0, -2.0, 0.0}, at::kFloat).view({2, 2});
  auto reference = ReferenceSet::FromTensor(items);
  ASSERT_TRUE(reference.ok());
  EXPECT_NEAR(DataScale(*reference), std::sqrt(2.0), 1e-6);
  v1::VerdictPolicy config;
  ResolvedPolicy resolved = ResolvePolicy(config, &*reference);
  EXPECT_NEAR(resolved.data_scale, std::sqrt(2.0), 1e-6);
  EXPECT_EQ(resolved.max_positive_eigenvalues, 0);
  EXPECT_DOUBLE_EQ(resolved.memorized_width, 0.1);
  config.set_data_scale(3.0);
  config.set_memorized_width(0.2);
  config.set_partial_width(0.4);
  resolved = ResolvePolicy(config, &*reference);
  EXPECT_DOUBLE_EQ(resolved.data_scale, 3.0);
  EXPECT_DOUBLE_EQ(resolved.memorized_width, 0.2);
  EXPECT_DOUBLE_EQ(ResolvePolicy(v1::VerdictPolicy(), nullptr).data_scale, 1.0);
}

}  // namespace
}  // namespace memaudit
