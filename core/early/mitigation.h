// Sharpness-aware initial noise (issue #14; docs/DESIGN.md §2): the
// sharpness at the first sampling step predicts a copy, so move each x_T
// to where that sharpness is low, keeping it a plausible Gaussian draw, and
// sample from the moved x_T with the same condition.
//
// Projected gradient descent on the sphere ‖x‖ = ‖x_T‖ (a draw of N(0, I)
// in d dimensions lies near the sphere of radius √d; keeping its own norm
// keeps it exactly as typical as it was): each step moves x along the
// negative gradient of the first-step sharpness (sharpness_gradient.h),
// normalized, by step_size·‖x_T‖, then rescales to the original norm. A row
// stops when its sharpness is at most `target`. Thread-safe if the denoiser
// is.
#ifndef MEMAUDIT_CORE_EARLY_MITIGATION_H_
#define MEMAUDIT_CORE_EARLY_MITIGATION_H_

#include <ATen/Tensor.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/stop.h"
#include "core/model/denoiser.h"
#include "core/model/sampler.h"

namespace memaudit {

struct MitigationOptions {
  SamplerOptions sampler;   // the sampling the guard protects (its first step)
  int64_t max_steps = 20;   // gradient steps per row, at most
  double step_size = 0.05;  // each step's length, as a fraction of ‖x_T‖
  double target = 0;        // a row stops once its sharpness ≤ target (0: never early)
};

struct MitigationResult {
  at::Tensor x_T;              // [B, *sample_shape]: the mitigated initial noise
  std::vector<double> before;  // the first-step sharpness of each row, before
  std::vector<double> after;   // and after
  std::vector<int64_t> steps;  // gradient steps each row took
  bool conditional = false;    // Jeon's metric (true) or ‖Hs‖²
};

// `x_T` [B, *sample_shape] (e.g. Trajectory::states.front() of the seeds to
// guard), `conditions` as for Denoiser::PrepareConditions. INVALID_ARGUMENT
// for bad options or shapes; `stop`'s status between steps.
absl::StatusOr<MitigationResult> MitigateInitialNoise(const Denoiser& denoiser,
                                                      const at::Tensor& x_T,
                                                      const at::Tensor& conditions,
                                                      const MitigationOptions& options,
                                                      const StopCheck& stop = {});

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_EARLY_MITIGATION_H_
