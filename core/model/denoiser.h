// From raw network output to ε̂, scores and the score fields whose Jacobians
// are the curvature (docs/DESIGN.md §2).
//
// All methods are const and thread-safe given a thread-safe network.
// Methods that run the network throw c10::Error on network failure; the
// *Field factories validate their arguments and return absl::Status.
#ifndef MEMAUDIT_CORE_MODEL_DENOISER_H_
#define MEMAUDIT_CORE_MODEL_DENOISER_H_

#include <ATen/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>

#include "absl/status/statusor.h"
#include "core/model/diffusion_network.h"

namespace memaudit {

// Which score's Jacobian the curvature is taken of.
enum class ScoreKind {
  kConditional,    // s(x, c)   (default, as in the paper's figures)
  kUnconditional,  // s(x, ∅)
  kGuided,         // −ε̂_w/σ with ε̂_w = ε̂_∅ + w·(ε̂_c − ε̂_∅)
  kDifference,     // s(x, c) − s(x, ∅)
};

// "conditional", "unconditional", "guided", "difference".
const char* ScoreKindName(ScoreKind kind);

// A differentiable vector field on batches at a fixed timestep:
// x [B, *sample_shape] → f(x) of the same shape. `rows` [B] int64 says which
// sample (index into the condition batch the field was built with) each row
// of x belongs to, so rows of different samples can share one network call.
using Field = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& rows)>;

class Denoiser {
 public:
  explicit Denoiser(std::shared_ptr<const DiffusionNetwork> network);

  const DiffusionNetwork& network() const { return *network_; }
  const NoiseSchedule& schedule() const { return network_->schedule(); }

  // ε̂ from the raw output `out` of the network at (x, t) per prediction_type:
  // EPSILON out; V_PREDICTION √ᾱ·out + σ·x; SAMPLE (x − √ᾱ·out)/σ; SCORE −σ·out.
  // t is [B] int64.
  at::Tensor EpsilonFromOutput(const at::Tensor& out, const at::Tensor& x,
                               const at::Tensor& t) const;

  // ε̂(x, t, condition): one network call.
  at::Tensor Epsilon(const at::Tensor& x, const at::Tensor& t, const at::Tensor& condition) const;

  // ε̂_c and ε̂_∅ of a conditional model at (x, t), in one batched call of
  // 2B rows (the null condition must exist).
  std::pair<at::Tensor, at::Tensor> ConditionalAndNullEpsilon(const at::Tensor& x,
                                                              const at::Tensor& t,
                                                              const at::Tensor& condition) const;

  // Classifier-free guided ε̂_w = ε̂_∅ + w·(ε̂_c − ε̂_∅), in one batched call of
  // 2B rows; w == 1 is ε̂_c and w == 0 is ε̂_∅ (one call of B rows). Models
  // without conditioning ignore w.
  at::Tensor GuidedEpsilon(const at::Tensor& x, const at::Tensor& t, const at::Tensor& condition,
                           double guidance) const;

  // The score field s(x) = −ε̂/σ_t of `kind` at training timestep t for the
  // samples' `conditions` ([N] labels or [N, *embedding_shape]; undefined for
  // unconditional models). INVALID_ARGUMENT when t is out of range or `kind`
  // needs a condition the model doesn't have, FAILED_PRECONDITION when an
  // EMBEDDING model has no stored null condition but `kind` needs it.
  absl::StatusOr<Field> ScoreField(int64_t t, ScoreKind kind, const at::Tensor& conditions,
                                   double guidance = 1.0) const;

  // Checks `conditions` for a batch of `batch` samples: labels in
  // [0, num_classes] (num_classes is the null class), or embeddings of the
  // configured shape. Returns them on the model's device and dtype.
  absl::StatusOr<at::Tensor> PrepareConditions(const at::Tensor& conditions, int64_t batch) const;

 private:
  // √ᾱ_t and σ_t for each row of t, shaped to broadcast against x.
  std::pair<at::Tensor, at::Tensor> Coefficients(const at::Tensor& t, const at::Tensor& x) const;

  std::shared_ptr<const DiffusionNetwork> network_;
  at::Tensor alpha_bars_;  // [T] float64 on the device
};

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_MODEL_DENOISER_H_
