// Sharpness-aware initial noise (core/early/mitigation.h) on exact mixtures: the
// first-step sharpness falls, every row keeps its norm (a draw stays as
// typical as it was), rows already at the target do not move, bad options
// are refused, and generations leave a sharp component at the stated rate.
#include "core/early/mitigation.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

#include "tests/test_util.h"

namespace memaudit {
namespace {

using testing::ScratchDir;

struct Guarded {
  std::unique_ptr<Denoiser> denoiser;
  at::Tensor x_T, conditions;
  MitigationOptions options;
};

// Class 0 of the mixture is a point mass (sharp), classes 1 and 2 broad;
// x_T are the sampler's own initial states for seeds 1..6.
Guarded MakeSetup(const std::string& repository) {
  Guarded s;
  auto checkpoint = testing::WriteAndLoadMixture(
      repository, "classes", testing::PointMassAndBroadClasses(16, 3), v1::NoiseSchedule::LINEAR,
      v1::EPSILON, at::kDouble, /*num_classes=*/3);
  EXPECT_NE(checkpoint, nullptr);
  s.denoiser = std::make_unique<Denoiser>(checkpoint);
  s.conditions = at::tensor({0, 0, 1, 0, 2, 0}, at::kLong);
  s.options.sampler.num_steps = 50;
  s.x_T = InitialNoise(*checkpoint, {1, 2, 3, 4, 5, 6});
  return s;
}

TEST(MitigationTest, SharpnessFallsAndEveryRowKeepsItsNorm) {
  ScratchDir dir;
  Guarded s = MakeSetup(dir.path());
  s.options.max_steps = 10;
  auto result = MitigateInitialNoise(*s.denoiser, s.x_T, s.conditions, s.options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->conditional);
  ASSERT_EQ(result->x_T.sizes(), s.x_T.sizes());
  for (int64_t b = 0; b < s.x_T.size(0); ++b) {
    EXPECT_LT(result->after[b], result->before[b]) << "row " << b;
    EXPECT_EQ(result->steps[b], 10);
    EXPECT_NEAR(result->x_T[b].norm().item<double>(), s.x_T[b].norm().item<double>(),
                1e-10 * s.x_T[b].norm().item<double>());
    EXPECT_GT((result->x_T[b] - s.x_T[b]).norm().item<double>(), 0.0);
  }
}

TEST(MitigationTest, RowsAtTheTargetDoNotMove) {
  ScratchDir dir;
  Guarded s = MakeSetup(dir.path());
  s.options.max_steps = 5;
  auto untouched = MitigateInitialNoise(*s.denoiser, s.x_T, s.conditions, s.options);
  ASSERT_TRUE(untouched.ok());
  std::vector<double> before = untouched->before;
  std::sort(before.begin(), before.end());
  s.options.target = before[before.size() / 2];  // the median: half are there already
  auto result = MitigateInitialNoise(*s.denoiser, s.x_T, s.conditions, s.options);
  ASSERT_TRUE(result.ok()) << result.status();
  int64_t still = 0;
  for (int64_t b = 0; b < s.x_T.size(0); ++b) {
    if (result->before[b] <= s.options.target) {
      ++still;
      EXPECT_EQ(result->steps[b], 0) << "row " << b;
      EXPECT_TRUE(at::equal(result->x_T[b], s.x_T[b])) << "row " << b;
    } else {
      EXPECT_GT(result->steps[b], 0) << "row " << b;
    }
  }
  EXPECT_GE(still, 1);
}

TEST(MitigationTest, BadOptionsAreRefused) {
  ScratchDir dir;
  Guarded s = MakeSetup(dir.path());
  MitigationOptions bad = s.options;
  bad.step_size = 0;
  EXPECT_EQ(MitigateInitialNoise(*s.denoiser, s.x_T, s.conditions, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad = s.options;
  bad.max_steps = -1;
  EXPECT_EQ(MitigateInitialNoise(*s.denoiser, s.x_T, s.conditions, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  int checks = 0;
  auto stopped = MitigateInitialNoise(*s.denoiser, s.x_T, s.conditions, s.options, [&checks] {
    return ++checks > 2 ? absl::CancelledError("stop") : absl::OkStatus();
  });
  EXPECT_EQ(stopped.status().code(), absl::StatusCode::kCancelled);
}

// Class 0 of this mixture is a memorized training point (a point mass,
// weight 1) beside a broad Gaussian (weight 1) on the other side of the
// origin; class 1 (weight 18) is that broad Gaussian too, so the null
// condition puts 1/20 of its mass on the point (as mnist39's unconditional
// data holds its 9 at 9%, textmnist's at 3%). A generation of class 0
// that ends within 0.05 of the point is a copy.
//
// The stated rate, read from seeds 1000–1063 and 2000–2063 (20 steps):
// the sharpness falls 6–8× but copies only 34 → 31 and 33 → 26 of 64. On
// an exact mixture the first step hardly sees which component a trajectory
// will reach (the noised components differ in covariance by ᾱ_T/2), so the
// guard moves few generations. Asserted on other seeds (0–63): the
// sharpness falls at least 5× and copies fall. (With the null weighting the
// point about as the condition does, the guard *raises* copies:
// docs/REPLICATION.md "Mitigation".)
TEST(MitigationTest, GenerationsLeaveTheSharpComponentAtTheStatedRate) {
  constexpr int64_t kDim = 8, kSeeds = 64;
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  toy::GaussianMixture mixture;
  mixture.weights = at::tensor({1.0, 1.0, 18.0}, f64);
  mixture.means = at::zeros({3, kDim}, f64);
  mixture.means[0][0] = 6.0;   // the memorized point
  mixture.means[1][0] = -6.0;  // class 0's broad part
  mixture.means[2][0] = -6.0;  // class 1
  mixture.covariances = at::eye(kDim, f64).unsqueeze(0).repeat({3, 1, 1}) * 0.5;
  mixture.covariances[0].mul_(1e-8);
  mixture.classes = at::tensor({0, 0, 1}, at::kLong);
  ScratchDir dir;
  auto checkpoint =
      testing::WriteAndLoadMixture(dir.path(), "sharp", mixture, v1::NoiseSchedule::SCALED_LINEAR,
                                   v1::EPSILON, at::kDouble, /*num_classes=*/2);
  ASSERT_NE(checkpoint, nullptr);
  Denoiser denoiser(checkpoint);
  std::vector<uint64_t> seeds;
  for (uint64_t i = 0; i < kSeeds; ++i) seeds.push_back(i);
  const at::Tensor conditions = at::zeros({kSeeds}, at::kLong);
  MitigationOptions options;
  options.sampler.num_steps = 50;
  options.sampler.keep_states = false;
  options.max_steps = 20;
  const at::Tensor x_T = InitialNoise(*checkpoint, seeds);
  auto copies = [&](const at::Tensor& initial) -> int64_t {
    SamplerOptions sampler = options.sampler;
    sampler.initial_state = initial;
    auto trajectory = SampleTrajectories(denoiser, seeds, conditions, sampler);
    EXPECT_TRUE(trajectory.ok()) << trajectory.status();
    if (!trajectory.ok()) return -1;
    const at::Tensor distance = (trajectory->final_sample - mixture.means[0]).norm(2, 1);
    return (distance < 0.05).sum().item<int64_t>();
  };
  auto guarded = MitigateInitialNoise(denoiser, x_T, conditions, options);
  ASSERT_TRUE(guarded.ok()) << guarded.status();
  double before = 0, after = 0;
  for (int64_t b = 0; b < kSeeds; ++b) before += guarded->before[b], after += guarded->after[b];
  EXPECT_LT(after, before / 5);
  const int64_t copies_before = copies(x_T), copies_after = copies(guarded->x_T);
  EXPECT_GT(copies_before, kSeeds / 4);  // the component is there to leave
  EXPECT_LT(copies_after, copies_before);
  std::printf("copies %lld -> %lld of %lld, mean sharpness %.4g -> %.4g\n",
              static_cast<long long>(copies_before), static_cast<long long>(copies_after),
              static_cast<long long>(kSeeds), before / kSeeds, after / kSeeds);
}

}  // namespace
}  // namespace memaudit
