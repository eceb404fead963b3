// Batched, seeded DDIM and DDPM-ancestral sampling that keeps the whole
// trajectory, so curvature can be taken at any sampling step.
//
// Determinism: every sample b draws all of its noise (initial x_T and the
// per-step noise) from its own CPU generator seeded with seeds[b], so a
// sample depends only on its seed and condition, not on its batch-mates, and
// the same seed gives the same sample on the same device type.
#ifndef MEMAUDIT_CORE_MODEL_SAMPLER_H_
#define MEMAUDIT_CORE_MODEL_SAMPLER_H_

#include <ATen/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/stop.h"
#include "core/model/denoiser.h"

namespace memaudit {

enum class SamplerKind { kDdim, kDdpm };
absl::StatusOr<SamplerKind> ParseSamplerKind(const std::string& name);  // "ddim" | "ddpm"

// What the network gave at one sampling step (SamplerOptions::observe_epsilon).
struct StepEpsilon {
  size_t step = 0;         // index into Trajectory::timesteps
  at::Tensor x;            // the step's input state x_t [B, *sample_shape]
  at::Tensor conditional;  // ε̂ at the samples' own conditions (the only ε̂ of
                           // an unconditional model)
  at::Tensor null;         // a conditional model's ε̂_∅ when it was evaluated
                           // (observe_null_epsilon, or guidance other than
                           // 1), else undefined
};

struct SamplerOptions {
  SamplerKind kind = SamplerKind::kDdim;
  int64_t num_steps = 50;
  // DDIM stochasticity η ∈ [0, 1]; 0 is deterministic. Ignored by DDPM.
  double eta = 0.0;
  // diffusers' "leading" spacing: t_i = i·⌊T/num_steps⌋ + steps_offset.
  int64_t steps_offset = 0;
  // ᾱ used after the last step: 1 (true) or ᾱ_0 (false; Stable Diffusion).
  bool set_alpha_to_one = true;
  // Classifier-free guidance weight w (1: conditional only, 0: unconditional).
  double guidance = 1.0;
  // Run only the first this many steps (0: all). The trajectory then holds
  // those states and final_sample is the state after the last step run —
  // what early (first-step) metrics need.
  int64_t stop_after_steps = 0;
  // Keep the state at every step in Trajectory::states (what spectra at an
  // evaluation step and early metrics need); false keeps only the final
  // sample, so memory does not grow with the number of steps.
  bool keep_states = true;
  // Called at each step run with what the network gave there (below), so
  // that early metrics need no second call at the same state. A non-OK
  // status stops sampling and is returned.
  std::function<absl::Status(const StepEpsilon&)> observe_epsilon;
  // With observe_epsilon on a conditional model: evaluate ε̂_c and ε̂_∅
  // together (one call of 2B rows whatever the guidance) and pass both; the
  // step still uses ε̂_∅ + w·(ε̂_c − ε̂_∅) (ε̂_c itself at w = 1).
  bool observe_null_epsilon = false;
  // [B, *sample_shape]: start from this state instead of the seeded x_T
  // (the per-step noise still comes from the seeds): sampling from an
  // initial noise that a guard moved (mitigation.h). Undefined: the seeds'.
  at::Tensor initial_state;
};

// The states of one batched sampling run.
struct Trajectory {
  // Sampling timesteps in the order visited (descending).
  std::vector<int64_t> timesteps;
  // states[i] = x_{timesteps[i]}, [B, *sample_shape], the input of step i
  // (empty unless SamplerOptions::keep_states).
  std::vector<at::Tensor> states;
  // The output of the last step (x_0), [B, *sample_shape].
  at::Tensor final_sample;
  // Network evaluations spent (rows; a guided row counts twice).
  int64_t network_evaluations = 0;
};

// Leading spacing as in diffusers' DDIM/DDPM schedulers, descending.
// INVALID_ARGUMENT if num_steps is not in [1, T] or the offset pushes a
// timestep out of [0, T−1].
absl::StatusOr<std::vector<int64_t>> LeadingTimesteps(int64_t num_train_timesteps,
                                                      int64_t num_steps, int64_t steps_offset);

// Index of the first sampling step whose σ_t is below `max_sigma` (the
// default evaluation point of docs/DESIGN.md §2); the last step if none is.
size_t FirstStepBelowSigma(const std::vector<int64_t>& timesteps, const NoiseSchedule& schedule,
                           double max_sigma);

// Called after each step with (steps done, steps total).
using StepProgress = std::function<void(int64_t, int64_t)>;

// The initial states x_T [B, *sample_shape] that SampleTrajectories draws for
// `seeds` (one CPU generator per seed), in the network's dtype and on
// its device, without a network call.
at::Tensor InitialNoise(const DiffusionNetwork& network, const std::vector<uint64_t>& seeds);

// The state sampling with `options` starts from: options.initial_state in
// the network's dtype and on its device when it is defined, otherwise
// InitialNoise(network, seeds). INVALID_ARGUMENT when initial_state is not
// [B, *sample_shape] with B = seeds.size().
absl::StatusOr<at::Tensor> StartingState(const DiffusionNetwork& network,
                                         const std::vector<uint64_t>& seeds,
                                         const SamplerOptions& options);

// Rows per sample of each network call a sampling step makes with
// `options`: 2 when a conditional network's step evaluates ε̂_c and ε̂_∅
// together (guidance other than 0 and 1; with observe_epsilon, guidance
// other than 1 or observe_null_epsilon), else 1. What the sampler counts in
// Trajectory::network_evaluations, and what callers use to size calls that
// must fit the memory sampling needed.
int64_t SamplingRowsPerSample(const DiffusionNetwork& network, const SamplerOptions& options);

// Samples seeds.size() samples. `conditions` as for Denoiser::PrepareConditions
// (undefined: the null condition / unconditional). Checks `stop` before each
// step and returns its status when it says stop.
absl::StatusOr<Trajectory> SampleTrajectories(
    const Denoiser& denoiser, const std::vector<uint64_t>& seeds, const at::Tensor& conditions,
    const SamplerOptions& options, const StopCheck& stop = {}, const StepProgress& progress = {});

// x at training timestep t on the trajectory: the stored state when t is a
// sampling timestep, otherwise one deterministic DDIM move from the nearest
// stored state above t (one extra network evaluation per sample).
// INVALID_ARGUMENT if t lies above the first sampling timestep.
absl::StatusOr<at::Tensor> StateAtTimestep(const Denoiser& denoiser, const Trajectory& trajectory,
                                           int64_t t, const at::Tensor& conditions,
                                           double guidance);

// x at training timestep t reached from the stored state of step `from` (an
// index into trajectory.timesteps, whose timestep is at or above t) by
// deterministic DDIM moves at guidance `guidance`: one move to each later
// sampling timestep above t, then one to t (none when t is that step's own).
// A move costs one network evaluation per sample (two rows when guided).
// StateAtTimestep is the case `from` = the last step at or above t.
// INVALID_ARGUMENT for a `from` outside the trajectory or below t.
absl::StatusOr<at::Tensor> DeterministicStateAt(const Denoiser& denoiser,
                                                const Trajectory& trajectory, size_t from,
                                                int64_t t, const at::Tensor& conditions,
                                                double guidance);

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_MODEL_SAMPLER_H_
