// The first-step sharpness as a function of x_T (core/early/sharpness_gradient.h):
// its value against the early metrics computed independently from the same
// x_T, and its gradient against central finite differences, on exact
// mixtures in float64 (conditional: Jeon's ‖H^Δ s^Δ‖; unconditional:
// ‖Hs‖²) and on the trained MNIST U-Net loaded in float64.
#include "core/early/sharpness_gradient.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "core/early/early_metrics.h"
#include "tests/test_util.h"

namespace memaudit {
namespace {

using testing::ScratchDir;

// Checks the value against ComputeEarlyMetrics (K = 1, same seeds, so the
// same x_T) and the gradient against (m(x + hv) − m(x − hv)) / 2h along
// random directions v.
void CheckAgainstEarlyMetricsAndFiniteDifferences(const Denoiser& denoiser,
                                                  const std::vector<uint64_t>& seeds,
                                                  const at::Tensor& conditions,
                                                  bool expect_conditional, double h,
                                                  double tolerance) {
  SamplerOptions sampler;
  sampler.num_steps = 50;
  const at::Tensor x_T = InitialNoise(denoiser.network(), seeds);
  EarlyMetricOptions early_options;
  early_options.sampler = sampler;
  auto early = ComputeEarlyMetrics(denoiser, seeds, conditions, early_options);
  ASSERT_TRUE(early.ok()) << early.status();

  auto result = FirstStepSharpnessGradient(denoiser, x_T, conditions, sampler);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->conditional, expect_conditional);
  EXPECT_EQ(result->timestep, early->timesteps.front());
  ASSERT_EQ(result->gradient.sizes(), x_T.sizes());
  const std::vector<double>& expected =
      expect_conditional ? early->jeon : early->hessian_score_squared;
  for (size_t b = 0; b < seeds.size(); ++b) {
    EXPECT_NEAR(result->value[b].item<double>(), expected[b], 1e-9 * std::abs(expected[b]))
        << "row " << b;
  }
  at::manual_seed(17);
  for (int direction = 0; direction < 3; ++direction) {
    at::Tensor v = at::randn_like(x_T);
    for (int64_t b = 0; b < v.size(0); ++b) v[b].div_(v[b].norm());
    auto plus = FirstStepSharpnessGradient(denoiser, x_T + h * v, conditions, sampler);
    auto minus = FirstStepSharpnessGradient(denoiser, x_T - h * v, conditions, sampler);
    ASSERT_TRUE(plus.ok() && minus.ok());
    for (size_t b = 0; b < seeds.size(); ++b) {
      const double numeric =
          (plus->value[b].item<double>() - minus->value[b].item<double>()) / (2 * h);
      const double analytic = (result->gradient[b] * v[b]).sum().item<double>();
      const double scale = result->gradient[b].norm().item<double>();
      EXPECT_NEAR(analytic, numeric, tolerance * scale)
          << "row " << b << ", direction " << direction;
    }
  }
}

TEST(SharpnessGradientTest, JeonsMetricOfAClassConditionalMixture) {
  ScratchDir dir;
  // Class 0 is a point mass (a memorized class: sharp at the first step),
  // classes 1 and 2 broad Gaussians.
  auto checkpoint = testing::WriteAndLoadMixture(
      dir.path(), "classes", testing::PointMassAndBroadClasses(16, 3), v1::NoiseSchedule::LINEAR,
      v1::EPSILON, at::kDouble, /*num_classes=*/3);
  ASSERT_NE(checkpoint, nullptr);
  Denoiser denoiser(checkpoint);
  CheckAgainstEarlyMetricsAndFiniteDifferences(denoiser, {1, 2, 3},
                                               at::tensor({0, 1, 0}, at::kLong),
                                               /*expect_conditional=*/true, 1e-5, 1e-6);
}

TEST(SharpnessGradientTest, HessianScoreNormOfAnUnconditionalMixture) {
  ScratchDir dir;
  auto checkpoint =
      testing::WriteAndLoadMixture(dir.path(), "gmm", toy::RandomGaussianMixture(12, 3, /*seed=*/5),
                                   v1::NoiseSchedule::LINEAR, v1::EPSILON);
  ASSERT_NE(checkpoint, nullptr);
  Denoiser denoiser(checkpoint);
  CheckAgainstEarlyMetricsAndFiniteDifferences(denoiser, {4, 5}, at::Tensor(),
                                               /*expect_conditional=*/false, 1e-5, 1e-6);
}

// A trained network (the committed MNIST U-Net, class 9 is memorized),
// loaded in float64 so that finite differences resolve the gradient.
TEST(SharpnessGradientTest, TrainedUNetInFloat64) {
  CheckpointOptions options;
  options.dtype = at::kDouble;
  auto checkpoint = LoadModel(std::string(MEMAUDIT_SOURCE_DIR) + "/checkpoints/mnist39", options);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  Denoiser denoiser(*checkpoint);
  CheckAgainstEarlyMetricsAndFiniteDifferences(denoiser, {11}, at::full({1}, 9, at::kLong),
                                               /*expect_conditional=*/true, 1e-4, 1e-4);
}

TEST(SharpnessGradientTest, BadShapesAreRefused) {
  ScratchDir dir;
  auto checkpoint =
      testing::WriteAndLoadMixture(dir.path(), "gmm", toy::RandomGaussianMixture(12, 2, 1),
                                   v1::NoiseSchedule::LINEAR, v1::EPSILON);
  Denoiser denoiser(checkpoint);
  auto wrong = FirstStepSharpnessGradient(denoiser, at::randn({2, 11}, at::kDouble), at::Tensor(),
                                          SamplerOptions{});
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("x_T"), std::string::npos);
}

}  // namespace
}  // namespace memaudit
