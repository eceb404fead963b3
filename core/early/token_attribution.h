// Which tokens of a prompt drive its memorization, from the sample's
// initial noise x_T alone (no denoising). For a timestep t and a condition c,
//
//   m(c) = ‖ε̂(x_T, t, c) − ε̂(x_T, t, ∅)‖₂   (Wen et al.'s metric at x_T)
//
// and two per-token measures, each averaged over the samples:
//
// - Deletion (ComputeTokenDeletions), what the product ranks tokens by:
//   m(c) − m(c without the token), c without the token being the prompt's
//   encoding with that token deleted (TextEncoder::EncodeWithEachTokenDeleted).
//   A word that triggers a memorized image is one whose removal collapses m.
//   Forward passes only: T + 1 rows per sample (T tokens), batched.
// - Gradient (ComputeTokenGradients): Wen et al.'s token-wise significance
//   (ICLR 2024, §4.2), ‖∂m/∂E_r‖₂ for E the text encoder's token-embedding
//   table, row r the token's id. One forward and backward pass per sample.
//
// The timestep: by default the low-noise one of the anisotropy metric
// (early_metrics.h, AlignmentTimestep), where memorization shows (Asthana &
// Belagiannis, ICLR 2026); Wen et al. take the first sampling timestep. On
// checkpoints/textmnist the first timestep's measures point at the digit
// word (what every caption of that digit shares), the low-noise ones at the
// memorized title; there the deletion names a title word for every
// memorized prompt, the gradient for 7 of 10 (docs/VERDICTS.md "Token
// attribution" has the measurements and the held-out checks).
#ifndef MEMAUDIT_CORE_EARLY_TOKEN_ATTRIBUTION_H_
#define MEMAUDIT_CORE_EARLY_TOKEN_ATTRIBUTION_H_

#include <ATen/Tensor.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/stop.h"
#include "core/model/denoiser.h"
#include "core/model/sampler.h"

namespace memaudit {

enum class AttributionTimestep {
  kLowNoise,  // AlignmentTimestep of the sampling timesteps (default)
  kFirst,     // the first sampling timestep (Wen et al.)
};

struct TokenAttribution {
  // Per token, the mean over samples of its measure: for deletions in units
  // of m (negative when deleting the token raises m); for gradients in
  // units of m per unit of embedding.
  std::vector<double> scores;
  int64_t timestep = -1;  // the timestep t used
  int64_t samples = 0;
};

// The deletion measure for one sample per seed, at `timestep` of the
// sampler's timesteps (num_steps, steps_offset): `condition` is the prompt's
// [1, *embedding_shape], `deletions` [T, *embedding_shape] its encodings
// with each token deleted (moved to condition's device and dtype);
// scores[i] = mean of m(condition) − m(deletions[i]). Per sample one call
// for ε̂(x_T, ∅) and ceil((T + 1) / rows_per_call) calls for the prompt and
// its deletions (the server passes its sampling calls' rows, so the
// attribution never needs a larger call than the audit has made).
// INVALID_ARGUMENT when the model takes no embeddings or has no null
// condition, there are no seeds, the shapes disagree or rows_per_call < 1;
// INTERNAL when the network fails; `stop`'s status, asked between network
// calls.
inline constexpr int64_t kDeletionBatch = 16;
absl::StatusOr<TokenAttribution> ComputeTokenDeletions(
    const Denoiser& denoiser, const std::vector<uint64_t>& seeds, const at::Tensor& condition,
    const at::Tensor& deletions, const SamplerOptions& sampler, const StopCheck& stop = {},
    AttributionTimestep timestep = AttributionTimestep::kLowNoise,
    int64_t rows_per_call = kDeletionBatch);

// What the gradient is taken of and with respect to.
struct GradientInput {
  // One condition [1, *embedding_shape], computed from `leaf` with autograd
  // recording (its graph is kept for every sample).
  at::Tensor condition;
  // A tensor that requires grad, [R, ...]: a token-embedding table, or the
  // condition's own rows.
  at::Tensor leaf;
  // The rows of `leaf` to score (e.g. the prompt's token ids), in [0, R).
  std::vector<int64_t> rows;
};

// The gradient measure for one sample per seed (one row per pass: a
// shared table's gradient would mix a batch's samples), at `timestep` as
// above; scores[i] = mean of ‖∂m/∂leaf_rows[i]‖₂. Errors as
// ComputeTokenDeletions', and INVALID_ARGUMENT when `input` is malformed
// (no graph from leaf to condition, a row out of range).
absl::StatusOr<TokenAttribution> ComputeTokenGradients(
    const Denoiser& denoiser, const std::vector<uint64_t>& seeds, const GradientInput& input,
    const SamplerOptions& sampler, const StopCheck& stop = {},
    AttributionTimestep timestep = AttributionTimestep::kLowNoise);

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_EARLY_TOKEN_ATTRIBUTION_H_
