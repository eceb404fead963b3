#include "core/model/sampler.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/runtime/torch_runtime.h"

namespace memaudit {
namespace {

// Per-sample noise streams.
class NoiseSource {
 public:
  NoiseSource(const std::vector<uint64_t>& seeds, std::vector<int64_t> sample_shape,
              at::TensorOptions options)
      : sample_shape_(std::move(sample_shape)), options_(options) {
    generators_.reserve(seeds.size());
    for (uint64_t seed : seeds)
      generators_.push_back(at::make_generator<at::CPUGeneratorImpl>(seed));
  }
  // [B, *sample_shape] standard normal, sample b from generator b.
  at::Tensor Next() {
    std::vector<at::Tensor> rows;
    rows.reserve(generators_.size());
    for (at::Generator& generator : generators_) {
      rows.push_back(at::randn(sample_shape_, generator, at::TensorOptions().dtype(at::kFloat)));
    }
    return at::stack(rows).to(options_);
  }

 private:
  std::vector<int64_t> sample_shape_;
  at::TensorOptions options_;
  std::vector<at::Generator> generators_;
};

}  // namespace

at::Tensor InitialNoise(const DiffusionNetwork& network, const std::vector<uint64_t>& seeds) {
  std::vector<int64_t> sample_shape(network.config().sample_shape().begin(),
                                    network.config().sample_shape().end());
  NoiseSource noise(seeds, sample_shape,
                    at::TensorOptions().dtype(network.dtype()).device(network.device()));
  return noise.Next();
}

namespace {

absl::Status CheckInitialState(const DiffusionNetwork& network, int64_t batch,
                               const SamplerOptions& options) {
  if (options.initial_state.defined() &&
      options.initial_state.sizes() != at::IntArrayRef(network.BatchShape(batch))) {
    return absl::InvalidArgumentError(
        "initial_state: must be [B, *sample_shape] with B the number of seeds");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<at::Tensor> StartingState(const DiffusionNetwork& network,
                                         const std::vector<uint64_t>& seeds,
                                         const SamplerOptions& options) {
  RETURN_IF_ERROR(CheckInitialState(network, static_cast<int64_t>(seeds.size()), options));
  if (!options.initial_state.defined()) return InitialNoise(network, seeds);
  return options.initial_state.to(
      at::TensorOptions().dtype(network.dtype()).device(network.device()));
}

absl::StatusOr<SamplerKind> ParseSamplerKind(const std::string& name) {
  if (name == "ddim") return SamplerKind::kDdim;
  if (name == "ddpm") return SamplerKind::kDdpm;
  return absl::InvalidArgumentError(absl::StrCat("sampler \"", name, "\" is not ddim or ddpm"));
}

absl::StatusOr<std::vector<int64_t>> LeadingTimesteps(int64_t num_train_timesteps,
                                                      int64_t num_steps, int64_t steps_offset) {
  if (num_steps < 1 || num_steps > num_train_timesteps) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_steps must be in [1, ", num_train_timesteps, "], got ", num_steps));
  }
  const int64_t ratio = num_train_timesteps / num_steps;
  std::vector<int64_t> timesteps;
  timesteps.reserve(num_steps);
  for (int64_t i = num_steps - 1; i >= 0; --i) timesteps.push_back(i * ratio + steps_offset);
  if (steps_offset < 0 || timesteps.front() >= num_train_timesteps) {
    return absl::InvalidArgumentError(absl::StrCat("steps_offset ", steps_offset,
                                                   " moves timesteps outside [0, ",
                                                   num_train_timesteps - 1, "]"));
  }
  return timesteps;
}

size_t FirstStepBelowSigma(const std::vector<int64_t>& timesteps, const NoiseSchedule& schedule,
                           double max_sigma) {
  for (size_t i = 0; i < timesteps.size(); ++i) {
    if (schedule.sigma(timesteps[i]) < max_sigma) return i;
  }
  return timesteps.empty() ? 0 : timesteps.size() - 1;
}

int64_t SamplingRowsPerSample(const DiffusionNetwork& network, const SamplerOptions& options) {
  if (!network.conditional()) return 1;
  if (options.observe_epsilon) {
    return options.observe_null_epsilon || options.guidance != 1.0 ? 2 : 1;
  }
  return options.guidance != 1.0 && options.guidance != 0.0 ? 2 : 1;
}

absl::StatusOr<Trajectory> SampleTrajectories(const Denoiser& denoiser,
                                              const std::vector<uint64_t>& seeds,
                                              const at::Tensor& conditions,
                                              const SamplerOptions& options, const StopCheck& stop,
                                              const StepProgress& progress) {
  const DiffusionNetwork& network = denoiser.network();
  const NoiseSchedule& schedule = denoiser.schedule();
  const int64_t batch = static_cast<int64_t>(seeds.size());
  if (batch == 0) return absl::InvalidArgumentError("seeds: at least one sample is needed");
  if (!(options.eta >= 0.0 && options.eta <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("eta must be in [0, 1], got ", options.eta));
  }
  if (!std::isfinite(options.guidance)) {
    return absl::InvalidArgumentError("guidance must be finite");
  }
  ASSIGN_OR_RETURN(
      const std::vector<int64_t> timesteps,
      LeadingTimesteps(schedule.num_train_timesteps(), options.num_steps, options.steps_offset));
  ASSIGN_OR_RETURN(const at::Tensor condition, denoiser.PrepareConditions(conditions, batch));
  const int64_t ratio = schedule.num_train_timesteps() / options.num_steps;
  const double final_alpha_bar = options.set_alpha_to_one ? 1.0 : schedule.alpha_bar(0);
  const int64_t rows_per_sample = SamplingRowsPerSample(network, options);

  const auto tensor_options = at::TensorOptions().dtype(network.dtype()).device(network.device());
  std::vector<int64_t> sample_shape(network.config().sample_shape().begin(),
                                    network.config().sample_shape().end());
  NoiseSource noise(seeds, sample_shape, tensor_options);
  RETURN_IF_ERROR(CheckInitialState(network, batch, options));

  Trajectory trajectory;
  trajectory.timesteps = timesteps;
  if (options.keep_states) trajectory.states.reserve(timesteps.size());
  c10::NoGradGuard no_grad;
  try {
    // The seeded x_T is drawn either way, so the per-step noise that
    // follows is the same with or without an initial state.
    at::Tensor x = noise.Next();
    if (options.initial_state.defined()) x = options.initial_state.to(tensor_options);
    const size_t steps_to_run =
        options.stop_after_steps > 0
            ? std::min(timesteps.size(), static_cast<size_t>(options.stop_after_steps))
            : timesteps.size();
    trajectory.timesteps.resize(steps_to_run);
    for (size_t i = 0; i < steps_to_run; ++i) {
      RETURN_IF_ERROR(CheckStop(stop));
      const int64_t t = timesteps[i];
      const int64_t prev_t = t - ratio;
      const double alpha_bar = schedule.alpha_bar(t);
      const double alpha_bar_prev = prev_t >= 0 ? schedule.alpha_bar(prev_t) : final_alpha_bar;
      if (options.keep_states) trajectory.states.push_back(x);

      at::Tensor steps = at::full({batch}, t, tensor_options.dtype(at::kLong));
      at::Tensor epsilon;
      StepEpsilon observed{i, x, at::Tensor(), at::Tensor()};
      if (options.observe_epsilon) {
        if (rows_per_sample == 2) {
          std::tie(observed.conditional, observed.null) =
              denoiser.ConditionalAndNullEpsilon(x, steps, condition);
          epsilon = options.guidance == 1.0 ? observed.conditional
                    : options.guidance == 0.0
                        ? observed.null
                        : observed.null + options.guidance * (observed.conditional - observed.null);
        } else {
          observed.conditional = epsilon = denoiser.Epsilon(x, steps, condition);
        }
      } else {
        epsilon = denoiser.GuidedEpsilon(x, steps, condition, options.guidance);
      }
      trajectory.network_evaluations += rows_per_sample * batch;
      // A model that passed the load probe can still break down at other
      // timesteps; say where instead of returning NaN samples.
      if (!at::isfinite(epsilon).all().item<bool>()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "model \"", network.config().name(), "\" returned non-finite values at timestep ", t,
            " (sampling step ", i + 1, " of ", timesteps.size(), ")"));
      }
      if (options.observe_epsilon) RETURN_IF_ERROR(options.observe_epsilon(observed));
      at::Tensor x0 = (x - std::sqrt(1.0 - alpha_bar) * epsilon) / std::sqrt(alpha_bar);

      if (options.kind == SamplerKind::kDdim) {
        // Song et al. (2021), eq. 12 with σ_η from eq. 16.
        const double sigma_eta = options.eta *
                                 std::sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar)) *
                                 std::sqrt(1.0 - alpha_bar / alpha_bar_prev);
        const double direction =
            std::sqrt(std::max(0.0, 1.0 - alpha_bar_prev - sigma_eta * sigma_eta));
        x = std::sqrt(alpha_bar_prev) * x0 + direction * epsilon;
        if (sigma_eta > 0.0) x = x + sigma_eta * noise.Next();
      } else {
        // DDPM posterior q(x_prev | x_t, x̂_0) over the strided steps with the
        // "fixed_small" variance, as diffusers' DDPMScheduler.
        const double beta = 1.0 - alpha_bar / alpha_bar_prev;
        const double x0_coefficient = std::sqrt(alpha_bar_prev) * beta / (1.0 - alpha_bar);
        const double xt_coefficient =
            std::sqrt(1.0 - beta) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar);
        x = x0_coefficient * x0 + xt_coefficient * x;
        if (t > 0 && prev_t >= 0) {
          const double variance =
              std::max(1e-20, (1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * beta);
          x = x + std::sqrt(variance) * noise.Next();
        }
      }
      if (progress) progress(static_cast<int64_t>(i) + 1, static_cast<int64_t>(steps_to_run));
    }
    trajectory.final_sample = x;
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInternal, "sampling failed in the network call", e);
  }
  return trajectory;
}

absl::StatusOr<at::Tensor> StateAtTimestep(const Denoiser& denoiser, const Trajectory& trajectory,
                                           int64_t t, const at::Tensor& conditions,
                                           double guidance) {
  if (trajectory.timesteps.empty()) return absl::InvalidArgumentError("empty trajectory");
  if (t < 0 || t > trajectory.timesteps.front()) {
    return absl::InvalidArgumentError(absl::StrCat("t: timestep ", t,
                                                   " is outside the sampled range [0, ",
                                                   trajectory.timesteps.front(), "]"));
  }
  size_t source = 0;
  for (size_t i = 0; i < trajectory.timesteps.size(); ++i) {
    if (trajectory.timesteps[i] >= t) source = i;
  }
  return DeterministicStateAt(denoiser, trajectory, source, t, conditions, guidance);
}

absl::StatusOr<at::Tensor> DeterministicStateAt(const Denoiser& denoiser,
                                                const Trajectory& trajectory, size_t from,
                                                int64_t t, const at::Tensor& conditions,
                                                double guidance) {
  const NoiseSchedule& schedule = denoiser.schedule();
  if (trajectory.states.size() != trajectory.timesteps.size()) {
    return absl::FailedPreconditionError("the trajectory was sampled without keep_states");
  }
  if (from >= trajectory.timesteps.size() || t < 0 || trajectory.timesteps[from] < t) {
    return absl::InvalidArgumentError(
        absl::StrCat("no sampling step at or above timestep ", t, " to start from"));
  }
  // The timesteps to visit after `from`: later grid steps above t, then t.
  std::vector<int64_t> targets;
  for (size_t i = from + 1; i < trajectory.timesteps.size() && trajectory.timesteps[i] > t; ++i) {
    targets.push_back(trajectory.timesteps[i]);
  }
  if (trajectory.timesteps[from] != t) targets.push_back(t);
  at::Tensor x = trajectory.states[from];
  int64_t current = trajectory.timesteps[from];
  if (targets.empty()) return x;
  ASSIGN_OR_RETURN(const at::Tensor prepared, denoiser.PrepareConditions(conditions, x.size(0)));
  c10::NoGradGuard no_grad;
  try {
    for (int64_t target : targets) {
      at::Tensor steps =
          at::full({x.size(0)}, current, at::TensorOptions().dtype(at::kLong).device(x.device()));
      at::Tensor epsilon = denoiser.GuidedEpsilon(x, steps, prepared, guidance);
      at::Tensor x0 = (x - schedule.sigma(current) * epsilon) / schedule.sqrt_alpha_bar(current);
      x = schedule.sqrt_alpha_bar(target) * x0 + schedule.sigma(target) * epsilon;
      current = target;
    }
    return x;
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInternal, "network call failed", e);
  }
}

}  // namespace memaudit
