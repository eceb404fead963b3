// The seed's toy experiment (docs/DESIGN.md §2): a small ε-prediction MLP trained
// on a Gaussian cloud plus one point duplicated many times.
#ifndef MEMAUDIT_TOOLS_TOY_TOY_MLP_H_
#define MEMAUDIT_TOOLS_TOY_TOY_MLP_H_

#include <ATen/Tensor.h>
#include <torch/csrc/jit/api/module.h>

#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"
#include "core/model/schedule.h"

namespace memaudit::toy {

struct ToyDataOptions {
  int64_t dim = 2;
  // The cloud lies in a random intrinsic_dim-dimensional linear subspace
  // (intrinsic_dim == dim: a full-dimensional standard normal cloud).
  int64_t intrinsic_dim = 2;
  int64_t cloud_points = 400;
  int64_t duplicates = 100;
  // Distance of the duplicated point from the cloud's centre, in the cloud's
  // standard deviations, along a direction inside the subspace.
  double duplicate_distance = 4.0;
  uint64_t seed = 0;
};

struct ToyData {
  at::Tensor points;      // [cloud_points + duplicates, dim] float32
  at::Tensor duplicated;  // [dim] the duplicated point
};

ToyData MakeToyData(const ToyDataOptions& options);

struct MlpOptions {
  int64_t hidden = 128;
  int64_t layers = 3;  // hidden layers
  int64_t time_frequencies = 16;
};

// forward(x: [B, dim], t: [B] int64) -> ε̂ [B, dim]: an MLP on
// [x, sin(t·f), cos(t·f)] with SiLU activations, float32 parameters,
// initialized from `seed`.
torch::jit::Module BuildToyMlp(int64_t dim, const MlpOptions& options, uint64_t seed);

struct TrainOptions {
  int64_t steps = 6000;
  int64_t batch_size = 512;
  double learning_rate = 2e-3;
  uint64_t seed = 0;
  // Class-conditional training (labels given): each label is replaced by
  // `null_label` with this probability, for classifier-free guidance.
  double condition_dropout = 0.2;
  int64_t null_label = -1;
};

struct TrainReport {
  double final_loss = 0.0;  // mean ε-MSE over the last 5% of steps
  double seconds = 0.0;
};

// Trains `module` in place with Adam on the ε-prediction loss
// E‖ε̂(√ᾱ_t x_0 + σ_t ε, t) − ε‖², t uniform over the schedule, with a
// cosine learning-rate decay. `log` (optional) gets (step, loss) now and then.
// With `labels` ([N] int64) the module is called as forward(x, t, y).
absl::StatusOr<TrainReport> TrainEpsilonModel(torch::jit::Module& module, const at::Tensor& data,
                                              const NoiseSchedule& schedule,
                                              const TrainOptions& options,
                                              const std::function<void(int64_t, double)>& log = {},
                                              const at::Tensor& labels = {});

}  // namespace memaudit::toy

#endif  // MEMAUDIT_TOOLS_TOY_TOY_MLP_H_
