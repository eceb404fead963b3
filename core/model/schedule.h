// Discrete variance-preserving noise schedules (docs/DESIGN.md §2).
//
// With T training steps and t ∈ {0..T−1}: ᾱ_t = Π_{s≤t}(1−β_s),
// σ_t = √(1−ᾱ_t) and x_t = √ᾱ_t·x_0 + σ_t·ε. All values are float64.
// A NoiseSchedule is immutable after Create and safe to share across threads.
#ifndef MEMAUDIT_CORE_MODEL_SCHEDULE_H_
#define MEMAUDIT_CORE_MODEL_SCHEDULE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "memaudit/v1/model_config.pb.h"

namespace memaudit {

class NoiseSchedule {
 public:
  // Builds the schedule described by `config`. Errors (INVALID_ARGUMENT) name
  // the offending field: non-positive num_train_timesteps, betas outside
  // (0, 1), beta_start > beta_end, unspecified kind.
  static absl::StatusOr<NoiseSchedule> Create(const v1::NoiseSchedule& config);

  int64_t num_train_timesteps() const { return static_cast<int64_t>(betas_.size()); }
  // Preconditions for the accessors below: 0 <= t < num_train_timesteps().
  double beta(int64_t t) const { return betas_[t]; }
  double alpha_bar(int64_t t) const { return alpha_bars_[t]; }
  double sqrt_alpha_bar(int64_t t) const;
  // σ_t = √(1 − ᾱ_t), the noise level of x_t.
  double sigma(int64_t t) const;
  const std::vector<double>& alpha_bars() const { return alpha_bars_; }

  // The first timestep (counting down from T−1) at which σ_t < max_sigma,
  // i.e. the largest t with σ_t < max_sigma; 0 if none.
  int64_t LargestTimestepBelowSigma(double max_sigma) const;

  // The timestep whose σ_t is nearest `target` on a log scale (the smaller t
  // on a tie). Precondition: target > 0.
  int64_t TimestepNearestSigma(double target) const;

 private:
  explicit NoiseSchedule(std::vector<double> betas);
  std::vector<double> betas_;
  std::vector<double> alpha_bars_;
};

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_MODEL_SCHEDULE_H_
