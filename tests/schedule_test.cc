#include "core/model/schedule.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "tools/toy/model_directory.h"

namespace memaudit {
namespace {

v1::NoiseSchedule Config(v1::NoiseSchedule::Kind kind) { return toy::DefaultSchedule(kind); }

// Reference values computed independently with numpy's cumprod:
//   /usr/bin/python3 -c "import numpy as np; b=np.linspace(1e-4,0.02,1000);
//     print(np.cumprod(1-b)[[0,20,999]])"
// and the same for (linspace(√0.00085, √0.012, 1000))² (Stable Diffusion).
TEST(ScheduleTest, LinearMatchesDdpm) {
  auto schedule = NoiseSchedule::Create(Config(v1::NoiseSchedule::LINEAR));
  ASSERT_TRUE(schedule.ok()) << schedule.status();
  EXPECT_NEAR(schedule->beta(0), 1e-4, 1e-15);
  EXPECT_NEAR(schedule->beta(999), 0.02, 1e-15);
  EXPECT_NEAR(schedule->alpha_bar(0), 0.9999, 1e-12);
  EXPECT_NEAR(schedule->alpha_bar(20), 0.9937354285721993, 1e-12);
  EXPECT_NEAR(schedule->alpha_bar(999) / 4.035829765375676e-05, 1.0, 1e-9);
  EXPECT_NEAR(schedule->sigma(20), 0.07914904565312636, 1e-10);
}

TEST(ScheduleTest, ScaledLinearMatchesStableDiffusion) {
  auto schedule = NoiseSchedule::Create(Config(v1::NoiseSchedule::SCALED_LINEAR));
  ASSERT_TRUE(schedule.ok()) << schedule.status();
  EXPECT_NEAR(schedule->alpha_bar(0), 1.0 - 0.00085, 1e-12);
  EXPECT_NEAR(schedule->alpha_bar(500), 0.2763326838229746, 1e-10);
  EXPECT_NEAR(schedule->alpha_bar(981), 0.005775500139495751, 1e-11);  // ≈ 0.00578
  EXPECT_NEAR(schedule->alpha_bar(999), 0.004660098513077238, 1e-11);
}

TEST(ScheduleTest, CosineFollowsClosedFormUntilClipping) {
  auto schedule = NoiseSchedule::Create(Config(v1::NoiseSchedule::COSINE));
  ASSERT_TRUE(schedule.ok()) << schedule.status();
  // Unclipped, ᾱ_t telescopes to f((t+1)/T)/f(0) with
  // f(u) = cos²((u + s)/(1 + s)·π/2).
  auto f = [](double u) {
    const double angle = (u + 0.008) / 1.008 * std::numbers::pi / 2.0;
    return std::cos(angle) * std::cos(angle);
  };
  for (int64_t t : {0, 1, 10, 250, 500, 900}) {
    EXPECT_NEAR(schedule->alpha_bar(t), f((t + 1) / 1000.0) / f(0.0), 1e-12) << "t=" << t;
  }
  // The last steps hit the β ≤ 0.999 clip.
  EXPECT_DOUBLE_EQ(schedule->beta(999), 0.999);
  for (int64_t t = 0; t < 1000; ++t) ASSERT_LE(schedule->beta(t), 0.999);
}

TEST(ScheduleTest, AlphaBarIsDecreasingAndSigmaConsistent) {
  for (auto kind :
       {v1::NoiseSchedule::LINEAR, v1::NoiseSchedule::SCALED_LINEAR, v1::NoiseSchedule::COSINE}) {
    auto schedule = NoiseSchedule::Create(Config(kind));
    ASSERT_TRUE(schedule.ok());
    for (int64_t t = 1; t < schedule->num_train_timesteps(); ++t) {
      ASSERT_LT(schedule->alpha_bar(t), schedule->alpha_bar(t - 1));
      ASSERT_NEAR(schedule->sigma(t) * schedule->sigma(t) + schedule->alpha_bar(t), 1.0, 1e-12);
    }
  }
}

TEST(ScheduleTest, LargestTimestepBelowSigma) {
  auto schedule = NoiseSchedule::Create(Config(v1::NoiseSchedule::LINEAR));
  ASSERT_TRUE(schedule.ok());
  const int64_t t = schedule->LargestTimestepBelowSigma(0.1);
  EXPECT_LT(schedule->sigma(t), 0.1);
  EXPECT_GE(schedule->sigma(t + 1), 0.1);
}

// The evaluation noise level lands on the same σ whatever the schedule: on
// each, no other timestep's σ_t is nearer the target (log scale), and the
// chosen one is within one step's change of σ.
TEST(ScheduleTest, TimestepNearestSigmaOnEverySchedule) {
  for (auto kind :
       {v1::NoiseSchedule::LINEAR, v1::NoiseSchedule::SCALED_LINEAR, v1::NoiseSchedule::COSINE}) {
    v1::NoiseSchedule config = Config(kind);
    if (kind == v1::NoiseSchedule::SCALED_LINEAR) {
      config.set_beta_start(0.00085);
      config.set_beta_end(0.012);
    }
    auto schedule = NoiseSchedule::Create(config);
    ASSERT_TRUE(schedule.ok());
    for (double target : {0.08, 0.3}) {
      const int64_t t = schedule->TimestepNearestSigma(target);
      const double chosen = std::abs(std::log(schedule->sigma(t) / target));
      for (int64_t u = 0; u < schedule->num_train_timesteps(); ++u) {
        ASSERT_GE(std::abs(std::log(schedule->sigma(u) / target)), chosen) << kind << " " << u;
      }
      EXPECT_LT(chosen, 0.1) << kind;
    }
  }
  // Linear, 1,000 steps: σ_20 = 0.0794 is the nearest to 0.08 (the default
  // evaluation step of 50 DDIM steps, where the verdict was derived).
  auto linear = NoiseSchedule::Create(Config(v1::NoiseSchedule::LINEAR));
  EXPECT_EQ(linear->TimestepNearestSigma(0.08), 20);
  // A target beyond the schedule's range takes its end.
  EXPECT_EQ(linear->TimestepNearestSigma(1e-6), 0);
  EXPECT_EQ(linear->TimestepNearestSigma(10.0), linear->num_train_timesteps() - 1);
}

TEST(ScheduleTest, RejectsBadConfigsNamingTheField) {
  v1::NoiseSchedule config = Config(v1::NoiseSchedule::LINEAR);
  config.set_num_train_timesteps(0);
  auto status = NoiseSchedule::Create(config).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("num_train_timesteps"), std::string::npos) << status;

  config = Config(v1::NoiseSchedule::LINEAR);
  config.set_beta_end(1.5);
  status = NoiseSchedule::Create(config).status();
  EXPECT_NE(status.message().find("beta_end"), std::string::npos) << status;

  config = Config(v1::NoiseSchedule::SCALED_LINEAR);
  config.set_beta_start(0.5);
  status = NoiseSchedule::Create(config).status();
  EXPECT_NE(status.message().find("beta_start"), std::string::npos) << status;

  config.set_kind(v1::NoiseSchedule::KIND_UNSPECIFIED);
  status = NoiseSchedule::Create(config).status();
  EXPECT_NE(status.message().find("kind"), std::string::npos) << status;
}

}  // namespace
}  // namespace memaudit
