#include "core/verdict/verdict.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace memaudit {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

SpectrumSummary Summary(int64_t positive, double radius, double noise_radius = kInf,
                        double width = kInf) {
  SpectrumSummary s;
  s.positive_count = positive;
  s.radius = radius;
  s.noise_radius = noise_radius;
  s.width = width;
  return s;
}

TEST(VerdictTest, RadiusAgainstSpacingAndNoise) {
  ResolvedPolicy policy;
  policy.rule = VerdictRule::kRadiusToSpacing;
  policy.spacing = 3.0;       // thresholds 1/3 and 2/3 of it: 1 and 2
  const double narrow = 0.1;  // noise radius well below 1
  EXPECT_EQ(JudgeSample(Summary(0, 0.9, narrow), policy), Verdict::kMemorized);
  EXPECT_EQ(JudgeSample(Summary(0, 1.5, narrow), policy), Verdict::kPartial);
  EXPECT_EQ(JudgeSample(Summary(0, 2.5, narrow), policy), Verdict::kNotMemorized);
  EXPECT_EQ(JudgeSample(Summary(0, kInf, kInf), policy), Verdict::kNotMemorized);
  // Both must hold: narrow against the gap but as wide as the noise.
  EXPECT_EQ(JudgeSample(Summary(0, 0.9, 1.5), policy), Verdict::kPartial);
  EXPECT_EQ(JudgeSample(Summary(0, 0.9, 2.5), policy), Verdict::kNotMemorized);
  // Any upward curvature: a saddle, never a copy, however narrow.
  EXPECT_EQ(JudgeSample(Summary(1, 0.0, 0.0), policy), Verdict::kNotMemorized);
  policy.max_positive_eigenvalues = 2;
  EXPECT_EQ(JudgeSample(Summary(2, 0.0, 0.0), policy), Verdict::kMemorized);
  // The gap around the nearest item replaces the global spacing: an
  // isolated item (gap 30) makes a radius of 5 narrow, a crowded one wide.
  NearestNeighbor isolated;
  isolated.gap = 30.0;
  EXPECT_EQ(JudgeSample(Summary(0, 5.0, narrow), policy, &isolated), Verdict::kMemorized);
  NearestNeighbor crowded;
  crowded.gap = 0.3;
  EXPECT_EQ(JudgeSample(Summary(0, 0.9, narrow), policy, &crowded), Verdict::kNotMemorized);
}

TEST(VerdictTest, NoiseRadiusWithoutSpacing) {
  ResolvedPolicy policy = ResolvePolicy(v1::VerdictPolicy(), nullptr);
  ASSERT_EQ(policy.rule, VerdictRule::kNoiseRadius);
  // The radius in data units is ignored; the noise radius decides (1, 2).
  EXPECT_EQ(JudgeSample(Summary(0, 100.0, 0.5), policy), Verdict::kMemorized);
  EXPECT_EQ(JudgeSample(Summary(0, 0.001, 1.5), policy), Verdict::kPartial);
  EXPECT_EQ(JudgeSample(Summary(0, 0.001, 2.5), policy), Verdict::kNotMemorized);
  EXPECT_EQ(JudgeSample(Summary(0, kInf, kInf), policy), Verdict::kNotMemorized);
  EXPECT_EQ(JudgeSample(Summary(3, 0, 0), policy), Verdict::kNotMemorized);
  // NaN (unknown) is never MEMORIZED.
  EXPECT_EQ(JudgeSample(Summary(0, 0, std::nan("")), policy), Verdict::kNotMemorized);
}

// Arnoldi returns only the eigenvalues that converged, and one left out may
// be the flattest: such a summary can read sharper than the truth, so it is
// at most PARTIAL, under every rule; it changes nothing that is not
// MEMORIZED.
TEST(VerdictTest, UnconvergedEigenvaluesCapTheVerdictAtPartial) {
  v1::VerdictPolicy width_config;
  width_config.set_memorized_width(0.2);
  for (const ResolvedPolicy& policy :
       {ResolvePolicy(v1::VerdictPolicy(), nullptr), ResolvePolicy(width_config, nullptr)}) {
    SpectrumSummary sharp = Summary(0, 0.01, 0.1, 0.01);
    ASSERT_EQ(JudgeSample(sharp, policy), Verdict::kMemorized);
    sharp.unconverged = 1;
    EXPECT_EQ(JudgeSample(sharp, policy), Verdict::kPartial);
    SpectrumSummary saddle = Summary(1, 0.01, 0.1, 0.01);
    saddle.unconverged = 3;
    EXPECT_EQ(JudgeSample(saddle, policy), Verdict::kNotMemorized);
  }
}

TEST(VerdictTest, CalibratedWidthRule) {
  v1::VerdictPolicy config;
  config.set_memorized_width(0.2);
  config.set_partial_width(0.4);
  config.set_data_scale(2.0);
  const ResolvedPolicy policy = ResolvePolicy(config, nullptr);
  ASSERT_EQ(policy.rule, VerdictRule::kWidth);
  EXPECT_EQ(JudgeSample(Summary(0, kInf, kInf, 0.3), policy), Verdict::kMemorized);
  // At the thresholds themselves (calibrated from observed widths, which
  // flag themselves): 0.2 × 2 and 0.4 × 2.
  EXPECT_EQ(JudgeSample(Summary(0, kInf, kInf, 0.4), policy), Verdict::kMemorized);
  EXPECT_EQ(JudgeSample(Summary(0, kInf, kInf, 0.8), policy), Verdict::kPartial);
  EXPECT_EQ(JudgeSample(Summary(0, 0, 0, 0.7), policy), Verdict::kPartial);
  EXPECT_EQ(JudgeSample(Summary(0, 0, 0, 0.9), policy), Verdict::kNotMemorized);
}

TEST(VerdictTest, ResolveChoosesTheRuleAndSpacing) {
  // Items 0, 1, 3, 3 (a duplicate) and 10 on a line: gaps to the nearest
  // distinct item 1, 1, 2, 2, 7; median 2.
  at::Tensor items = at::tensor({0.0, 1.0, 3.0, 3.0, 10.0}, at::kFloat).view({5, 1});
  auto reference = ReferenceSet::FromTensor(items);
  ASSERT_TRUE(reference.ok());
  EXPECT_NEAR(reference->spacing(), 2.0, 1e-12);
  ResolvedPolicy resolved = ResolvePolicy(v1::VerdictPolicy(), &*reference);
  EXPECT_EQ(resolved.rule, VerdictRule::kRadiusToSpacing);
  EXPECT_NEAR(resolved.spacing, 2.0, 1e-12);
  EXPECT_DOUBLE_EQ(resolved.memorized_radius, 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(resolved.partial_radius, 2.0 / 3.0);
  v1::VerdictPolicy config;
  config.set_spacing(5.0);
  config.set_memorized_radius(0.2);
  resolved = ResolvePolicy(config, &*reference);
  EXPECT_DOUBLE_EQ(resolved.spacing, 5.0);
  EXPECT_DOUBLE_EQ(resolved.memorized_radius, 0.2);
  EXPECT_EQ(ResolvePolicy(config, nullptr).rule, VerdictRule::kRadiusToSpacing);
  // Width-rule data scale: RMS per-element standard deviation.
  EXPECT_NEAR(DataScale(*reference), std::sqrt(items.var(0, false).item<double>()), 1e-6);
}

TEST(VerdictTest, ConditionAndModelVerdicts) {
  ResolvedPolicy policy;  // condition 0.5, model 0.1
  EXPECT_EQ(JudgeCondition(8, 0, 16, policy), Verdict::kMemorized);
  EXPECT_EQ(JudgeCondition(7, 0, 16, policy), Verdict::kPartial);
  EXPECT_EQ(JudgeCondition(0, 1, 16, policy), Verdict::kPartial);
  EXPECT_EQ(JudgeCondition(0, 0, 16, policy), Verdict::kNotMemorized);
  // An unconditional model whose samples are 18% copies: its one condition
  // is PARTIAL, but a release gate must see MEMORIZED.
  EXPECT_EQ(JudgeCondition(36, 0, 200, policy), Verdict::kPartial);
  EXPECT_EQ(JudgeModel(Verdict::kPartial, 36, 200, policy), Verdict::kMemorized);
  // A stray sample below the model fraction stays PARTIAL.
  EXPECT_EQ(JudgeModel(Verdict::kPartial, 5, 200, policy), Verdict::kPartial);
  // One memorized class among many is enough.
  EXPECT_EQ(JudgeModel(Verdict::kMemorized, 16, 1000, policy), Verdict::kMemorized);
  EXPECT_EQ(JudgeModel(Verdict::kNotMemorized, 0, 1000, policy), Verdict::kNotMemorized);
}

TEST(VerdictTest, PolicyValidation) {
  EXPECT_TRUE(ValidatePolicy(v1::VerdictPolicy()).ok());
  v1::VerdictPolicy policy;
  policy.set_partial_noise_radius(0.5);  // below the default memorized (1)
  absl::Status status = ValidatePolicy(policy);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("partial_noise_radius"), std::string::npos) << status;
  policy.set_memorized_noise_radius(0.25);
  EXPECT_TRUE(ValidatePolicy(policy).ok());
  // A memorized threshold above the default partial one empties the band.
  v1::VerdictPolicy high;
  high.set_memorized_noise_radius(3);
  ASSERT_TRUE(ValidatePolicy(high).ok());
  EXPECT_DOUBLE_EQ(ResolvePolicy(high, nullptr).partial_noise_radius, 3.0);
  v1::VerdictPolicy orphan;
  orphan.set_partial_width(0.3);  // the width rule needs memorized_width
  EXPECT_FALSE(ValidatePolicy(orphan).ok());
  // A score among conditions carries no threshold; its parts do.
  v1::VerdictPolicy combined;
  combined.set_early_metric("anisotropy");
  status = ValidatePolicy(combined);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("label-free"), std::string::npos) << status;
  combined.set_early_metric("anisotropy_alignment");
  EXPECT_TRUE(ValidatePolicy(combined).ok());
  // A cosine's threshold may be negative (calibrate can write one); a
  // norm's may not.
  combined.set_early_threshold(-0.05);
  EXPECT_TRUE(ValidatePolicy(combined).ok());
  combined.set_early_metric("jeon_sharpness");
  status = ValidatePolicy(combined);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("early_threshold"), std::string::npos) << status;
}

// The radius of the local Gaussian: for a Gaussian p₀ with per-direction
// variances v_i the curvature of p_t is λ_i = −1/(ᾱ·v_i + σ²), and the
// radius recovers √Σ v_i; the noise radius √(mean ᾱ v_i/σ²).
TEST(VerdictTest, RadiusRecoversGaussianSpread) {
  const double sigma = 0.08, sqrt_alpha_bar = 0.99;
  const double alpha_bar = sqrt_alpha_bar * sqrt_alpha_bar;
  const std::vector<double> variances = {0.5, 0.1, 0.01, 0.0};
  std::vector<std::complex<double>> eigenvalues;
  double total = 0;
  for (double v : variances) {
    eigenvalues.emplace_back(-1.0 / (alpha_bar * v + sigma * sigma), 0.0);
    total += v;
  }
  SpectrumSummary s = Summarize(eigenvalues, sigma, sqrt_alpha_bar);
  EXPECT_NEAR(s.radius, std::sqrt(total), 1e-9);
  EXPECT_NEAR(s.noise_radius, std::sqrt(alpha_bar * total / 4) / sigma, 1e-9);
  EXPECT_NEAR(s.width, std::sqrt(0.5), 1e-9);
  // A partial spectrum (the two flattest of d = 10): the 8 unseen
  // directions are bounded by the smallest variance found, 0.1.
  SpectrumSummary bound =
      Summarize({eigenvalues[0], eigenvalues[1]}, sigma, sqrt_alpha_bar, {}, true, 10);
  EXPECT_NEAR(bound.radius, std::sqrt(0.5 + 0.1 + 8 * 0.1), 1e-9);
  EXPECT_GE(bound.radius, s.radius);
  // Upward curvature: no peak, infinite radius.
  eigenvalues.emplace_back(5.0, 0.0);
  EXPECT_TRUE(std::isinf(Summarize(eigenvalues, sigma, sqrt_alpha_bar).radius));
}

}  // namespace
}  // namespace memaudit
