#include "core/model/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"

namespace memaudit {
namespace {

constexpr double kCosineOffset = 0.008;  // s in Nichol & Dhariwal (2021)
constexpr double kCosineMaxBeta = 0.999;

// Nichol & Dhariwal's f(u) = cos²(((u + s)/(1 + s))·π/2) for u = t/T.
double CosineAlphaBar(double u) {
  const double angle = (u + kCosineOffset) / (1.0 + kCosineOffset) * std::numbers::pi / 2.0;
  return std::cos(angle) * std::cos(angle);
}

absl::Status CheckBetaRange(const v1::NoiseSchedule& config) {
  if (!(config.beta_start() > 0.0 && config.beta_start() < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("noise_schedule.beta_start must be in (0, 1), got ", config.beta_start()));
  }
  if (!(config.beta_end() > 0.0 && config.beta_end() < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("noise_schedule.beta_end must be in (0, 1), got ", config.beta_end()));
  }
  if (config.beta_start() > config.beta_end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("noise_schedule.beta_start (", config.beta_start(),
                     ") must not exceed beta_end (", config.beta_end(), ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<NoiseSchedule> NoiseSchedule::Create(const v1::NoiseSchedule& config) {
  const int64_t steps = config.num_train_timesteps();
  if (steps < 2 || steps > 1'000'000) {
    return absl::InvalidArgumentError(
        absl::StrCat("noise_schedule.num_train_timesteps must be in [2, 1000000], got ", steps));
  }
  std::vector<double> betas(steps);
  switch (config.kind()) {
    case v1::NoiseSchedule::LINEAR: {
      RETURN_IF_ERROR(CheckBetaRange(config));
      for (int64_t t = 0; t < steps; ++t) {
        betas[t] = config.beta_start() +
                   (config.beta_end() - config.beta_start()) * t / static_cast<double>(steps - 1);
      }
      break;
    }
    case v1::NoiseSchedule::SCALED_LINEAR: {
      RETURN_IF_ERROR(CheckBetaRange(config));
      const double lo = std::sqrt(config.beta_start());
      const double hi = std::sqrt(config.beta_end());
      for (int64_t t = 0; t < steps; ++t) {
        const double root = lo + (hi - lo) * t / static_cast<double>(steps - 1);
        betas[t] = root * root;
      }
      break;
    }
    case v1::NoiseSchedule::COSINE: {
      for (int64_t t = 0; t < steps; ++t) {
        const double ratio = CosineAlphaBar(static_cast<double>(t + 1) / steps) /
                             CosineAlphaBar(static_cast<double>(t) / steps);
        betas[t] = std::min(1.0 - ratio, kCosineMaxBeta);
      }
      break;
    }
    default:
      return absl::InvalidArgumentError(
          "noise_schedule.kind must be LINEAR, SCALED_LINEAR or COSINE");
  }
  return NoiseSchedule(std::move(betas));
}

NoiseSchedule::NoiseSchedule(std::vector<double> betas) : betas_(std::move(betas)) {
  alpha_bars_.resize(betas_.size());
  double product = 1.0;
  for (size_t t = 0; t < betas_.size(); ++t) {
    product *= 1.0 - betas_[t];
    alpha_bars_[t] = product;
  }
}

double NoiseSchedule::sqrt_alpha_bar(int64_t t) const { return std::sqrt(alpha_bars_[t]); }

double NoiseSchedule::sigma(int64_t t) const { return std::sqrt(1.0 - alpha_bars_[t]); }

int64_t NoiseSchedule::LargestTimestepBelowSigma(double max_sigma) const {
  for (int64_t t = num_train_timesteps() - 1; t >= 0; --t) {
    if (sigma(t) < max_sigma) return t;
  }
  return 0;
}

int64_t NoiseSchedule::TimestepNearestSigma(double target) const {
  int64_t best = 0;
  double best_distance = std::abs(std::log(sigma(0) / target));
  for (int64_t t = 1; t < num_train_timesteps(); ++t) {
    const double distance = std::abs(std::log(sigma(t) / target));
    if (distance < best_distance) {
      best = t;
      best_distance = distance;
    }
  }
  return best;
}

}  // namespace memaudit
