// Which tokens of a prompt drive its memorization: the token-wise
// significance of Wen et al. (ICLR 2024, "Detecting, Explaining, and
// Mitigating Memorization in Diffusion Models", §4.2), denoising-free. For
// a sample with initial noise x_T and a timestep t,
//
//   m(c) = ‖ε̂(x_T, t, c) − ε̂(x_T, t, ∅)‖₂   (Wen's metric at x_T)
//
// where the condition c is computed from a tensor E (for prompts: the text
// encoder's token-embedding table, so that the gradient flows through the
// whole encoder), and the significance of row r of E is ‖∂m/∂E_r‖₂
// averaged over the samples. One forward and one backward pass of one row
// per sample (a shared table's gradient would mix the samples of a batch).
//
// The timestep: by default the low-noise one of the anisotropy metric
// (early_metrics.h, AlignmentTimestep), where memorization shows
// (Asthana & Belagiannis, ICLR 2026); Wen et al. take the first sampling
// timestep. On checkpoints/textmnist the first timestep's gradient
// points at the digit word (what every caption of that digit shares), the
// low-noise one at the memorized title (docs/VERDICTS.md "Token
// attribution" has the measurements and the held-out check).
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

// What the gradient is taken of and with respect to.
struct AttributionInput {
  // One condition [1, *embedding_shape], computed from `leaf` with autograd
  // recording (its graph is kept for every sample).
  at::Tensor condition;
  // A tensor that requires grad, [R, ...]: a token-embedding table, or the
  // condition's own rows.
  at::Tensor leaf;
  // The rows of `leaf` to score (e.g. the prompt's token ids), in [0, R).
  std::vector<int64_t> rows;
};

enum class AttributionTimestep {
  kLowNoise,  // AlignmentTimestep of the sampling timesteps (default)
  kFirst,     // the first sampling timestep (Wen et al.)
};

struct TokenAttribution {
  // Per entry of AttributionInput::rows: the mean over samples of
  // ‖∂m/∂leaf_r‖₂, in units of m per unit of embedding.
  std::vector<double> scores;
  int64_t timestep = -1;  // the timestep t used
  int64_t samples = 0;
};

// The significance for one sample per seed, at `timestep` of the
// sampler's timesteps (num_steps, steps_offset). INVALID_ARGUMENT when the model takes
// no embeddings or has no null condition, there are no seeds, `input` is
// malformed (no graph from leaf to condition, a row out of range); INTERNAL
// when the network fails; `stop`'s status, asked between network calls.
absl::StatusOr<TokenAttribution> ComputeTokenAttribution(
    const Denoiser& denoiser, const std::vector<uint64_t>& seeds, const AttributionInput& input,
    const SamplerOptions& sampler, const StopCheck& stop = {},
    AttributionTimestep timestep = AttributionTimestep::kLowNoise);

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_EARLY_TOKEN_ATTRIBUTION_H_
