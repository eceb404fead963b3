// Sharpness-aware initial noise (core/mitigation.h) on exact mixtures: the
// first-step sharpness falls, every row keeps its norm (a draw stays as
// typical as it was), rows already at the target do not move, and bad
// options are refused.
#include "mitigation.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "test_util.h"

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

}  // namespace
}  // namespace memaudit
