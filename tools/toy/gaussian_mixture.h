// Exact diffusion models of Gaussian mixtures: the test oracle of docs/DESIGN.md §2.
//
// For p_0 = Σ w_i N(μ_i, Σ_i) the noised density is Σ w_i N(√ᾱ·μ_i,
// ᾱ·Σ_i + σ²·I), so the score and its Jacobian are known in closed form.
// BuildGaussianMixtureModule writes that exact ε̂ (converted to any
// prediction type) as a TorchScript module obeying the checkpoint contract.
#ifndef MEMAUDIT_TOOLS_TOY_GAUSSIAN_MIXTURE_H_
#define MEMAUDIT_TOOLS_TOY_GAUSSIAN_MIXTURE_H_

#include <ATen/Tensor.h>
#include <torch/csrc/jit/api/module.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/schedule.h"
#include "memaudit/v1/model_config.pb.h"

namespace memaudit::toy {

struct GaussianMixture {
  at::Tensor weights;      // [K] float64, positive (normalized on use)
  at::Tensor means;        // [K, d] float64
  at::Tensor covariances;  // [K, d, d] float64, symmetric positive semi-definite
  // Optional [K] int64 class of each component, for CLASS_LABEL models: the
  // condition y selects components of class y; y == num_classes all of them.
  at::Tensor classes;
  int64_t dim() const { return means.size(1); }
  int64_t size() const { return means.size(0); }
};

// K random components in d dimensions (seeded): means ~ N(0, 4·I), random
// anisotropic covariances with eigenvalues in [0.05, 1.5], some of them
// rank-deficient (a zero eigenvalue: a flat manifold direction) when d > 1.
// With num_classes > 0 components are dealt to classes round-robin.
GaussianMixture RandomGaussianMixture(int64_t dim, int64_t components, uint64_t seed,
                                      int64_t num_classes = 0);

// The "empirical" mixture: one isotropic component of variance `variance`
// at each point of `points` [N, d], equal weights. It memorizes every point.
GaussianMixture EmpiricalMixture(const at::Tensor& points, double variance);

// The TorchScript module computing the exact output of `prediction` type for
// `mixture` under `schedule` (EPSILON: ε̂; SCORE: s; V_PREDICTION: v; SAMPLE:
// x̂_0). forward(x, t) or, when mixture.classes is defined, forward(x, t, y).
// Works in the input's dtype (float32 or float64). `sample_shape` must
// have d elements.
// How a class-conditional mixture receives its condition.
enum class MixtureConditioning {
  kClassLabel,  // forward(x, t, y): y == num_classes selects every component
  // forward(x, t, c) with c [B, num_classes]: a (multi-)hot class embedding;
  // components of classes with c > 0.5 are selected, and the all-zero
  // embedding (the null condition, saved as null_condition.pt) selects all.
  kEmbedding,
};

absl::StatusOr<torch::jit::Module> BuildGaussianMixtureModule(
    const GaussianMixture& mixture, const NoiseSchedule& schedule, v1::PredictionType prediction,
    int64_t num_classes = 0, MixtureConditioning conditioning = MixtureConditioning::kClassLabel);

}  // namespace memaudit::toy

#endif  // MEMAUDIT_TOOLS_TOY_GAUSSIAN_MIXTURE_H_
