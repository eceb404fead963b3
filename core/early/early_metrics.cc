#include "core/early/early_metrics.h"

#include <algorithm>
#include <cmath>
#include <string>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/runtime/torch_runtime.h"
#include "core/spectra/curvature.h"

namespace memaudit {
namespace {

// A tensor's values as doubles, on the CPU.
std::vector<double> ToVector(const at::Tensor& values) {
  const at::Tensor cpu = values.to(at::kDouble).to(at::kCPU).contiguous();
  return std::vector<double>(cpu.data_ptr<double>(), cpu.data_ptr<double>() + cpu.numel());
}

// Per-row L2 norm of a [B, ...] tensor, as doubles.
std::vector<double> RowNorms(const at::Tensor& values, bool squared) {
  at::Tensor norms = values.reshape({values.size(0), -1}).to(at::kDouble).pow(2).sum(1);
  return ToVector(squared ? norms : norms.sqrt());
}

void Accumulate(std::vector<double>& total, const std::vector<double>& step, int64_t steps) {
  if (total.empty()) total.assign(step.size(), 0.0);
  for (size_t i = 0; i < step.size(); ++i) total[i] += step[i] / static_cast<double>(steps);
}

// What the anisotropy metric needs from the network at x_T: ε̂_c − ε̂_∅ at
// the first timestep (unless the caller has it: `first_difference`
// defined) and the alignment at the low one. Two calls of 2B rows, not one
// of 4B: on the CPU one call of 4B rows took 2-3 times as long as two of 2B
// here (the MNIST U-Net, LibTorch 1.13), and on a GPU 2B rows already fill
// the device for any batch worth timing.
struct AnisotropyParts {
  at::Tensor first_difference;  // ε̂_c − ε̂_∅ at (x_T, t_first)
  std::vector<double> alignment;
};

AnisotropyParts MeasureAnisotropy(const Denoiser& denoiser, const at::Tensor& x_t,
                                  const at::Tensor& prepared, int64_t t_first, int64_t t_low,
                                  at::Tensor first_difference) {
  c10::NoGradGuard no_grad;
  const int64_t batch = x_t.size(0);
  const at::TensorOptions steps = at::TensorOptions().dtype(at::kLong).device(x_t.device());
  AnisotropyParts parts;
  if (!first_difference.defined()) {
    const auto [conditional, null] =
        denoiser.ConditionalAndNullEpsilon(x_t, at::full({batch}, t_first, steps), prepared);
    first_difference = conditional - null;
  }
  parts.first_difference = first_difference;
  const auto [conditional, null] =
      denoiser.ConditionalAndNullEpsilon(x_t, at::full({batch}, t_low, steps), prepared);
  // The cosine over the whole sample, in double; 0 where a vector is 0 (its
  // dot product is then 0 too).
  const at::Tensor unconditional = null.reshape({batch, -1}).to(at::kDouble);
  const at::Tensor direction = (conditional - null).reshape({batch, -1}).to(at::kDouble);
  const at::Tensor norms = unconditional.norm(2, 1) * direction.norm(2, 1);
  parts.alignment = ToVector((unconditional * direction).sum(1) / norms.clamp_min(1e-300));
  return parts;
}

// FAILED_PRECONDITION naming the metric and seed when a value is NaN or
// infinite: the sampler catches a network's breakdown only when K > 1, and a
// non-finite metric would otherwise read as unflagged (NaN ≥ threshold is
// false).
absl::Status CheckFinite(const EarlyMetricSamples& samples, const std::string& model,
                         const std::vector<uint64_t>& seeds) {
  for (const EarlyMetricInfo& info : AllEarlyMetrics()) {
    const std::vector<double> values = EarlyMetricValues(samples, info.metric);
    for (size_t i = 0; i < values.size(); ++i) {
      if (std::isfinite(values[i])) continue;
      return absl::FailedPreconditionError(
          absl::StrCat("model \"", model, "\" gave a non-finite early metric ", info.name, " (",
                       values[i], ") for seed ", i < seeds.size() ? seeds[i] : 0,
                       ": its network returns NaN or infinite values at these timesteps"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<double> EarlyMetricValues(const EarlyMetricSamples& samples, EarlyMetric metric) {
  switch (metric) {
    case EarlyMetric::kWenNoiseDifference:
      return samples.wen;
    case EarlyMetric::kJeonSharpness:
      return samples.jeon;
    case EarlyMetric::kScoreNormSquared:
      return samples.score_norm_squared;
    case EarlyMetric::kHessianScoreSquared:
      return samples.hessian_score_squared;
    case EarlyMetric::kNegativeTrace: {
      std::vector<double> negative;
      for (double v : samples.hutchinson_trace) negative.push_back(-v);
      return negative;
    }
    case EarlyMetric::kAnisotropyNorm:
      return samples.anisotropy_norm;
    case EarlyMetric::kAnisotropyAlignment:
      return samples.anisotropy_alignment;
    case EarlyMetric::kAnisotropy:
      return {};  // scored among conditions (calibration.h)
  }
  return {};
}

int64_t AlignmentTimestep(const std::vector<int64_t>& sampling_timesteps) {
  if (sampling_timesteps.empty()) return 0;
  return sampling_timesteps[sampling_timesteps.size() -
                            std::min<size_t>(3, sampling_timesteps.size())];
}

bool IsRealCondition(const DiffusionNetwork& network, const at::Tensor& prepared, int64_t batch) {
  if (!network.conditional() || !prepared.defined()) return false;
  const at::Tensor null_condition = network.NullCondition(batch);
  return !null_condition.defined() || !at::equal(prepared, null_condition);
}

double Mean(const std::vector<double>& values) {
  double sum = 0;
  for (double v : values) sum += v;
  return values.empty() ? 0.0 : sum / static_cast<double>(values.size());
}

absl::StatusOr<EarlyMetricSamples> ComputeEarlyMetrics(const Denoiser& denoiser,
                                                       const std::vector<uint64_t>& seeds,
                                                       const at::Tensor& conditions,
                                                       const EarlyMetricOptions& options,
                                                       const StopCheck& stop) {
  if (options.steps < 1) return absl::InvalidArgumentError("steps: must be at least 1");
  if (options.hutchinson_probes < 1) {
    return absl::InvalidArgumentError("hutchinson_probes: must be at least 1");
  }
  const int64_t batch = static_cast<int64_t>(seeds.size());
  ASSIGN_OR_RETURN(const at::Tensor prepared, denoiser.PrepareConditions(conditions, batch));
  const DiffusionNetwork& network = denoiser.network();
  const bool conditional = IsRealCondition(network, prepared, batch);
  // The states at the first K timesteps: x_T, then K − 1 sampling steps.
  // The K-th step's output is not needed, and x_T needs no network call
  // (at K = 1 that is a third of the calls). Each sampling step's network
  // call also gives the metrics' field at its state (s^Δ from ε̂_c and ε̂_∅
  // evaluated together, or s), so only the last state needs a call of its
  // own besides the JVPs: 2K calls for Wen + Jeon, not 3K − 1.
  ASSIGN_OR_RETURN(const std::vector<int64_t> all_timesteps,
                   LeadingTimesteps(denoiser.schedule().num_train_timesteps(),
                                    options.sampler.num_steps, options.sampler.steps_offset));
  const int64_t steps =
      std::min<int64_t>(options.steps, static_cast<int64_t>(all_timesteps.size()));
  // The metrics' field must exist (e.g. s^Δ needs a null condition) before
  // sampling asks the network for its parts.
  const ScoreKind field_kind = conditional ? ScoreKind::kDifference : ScoreKind::kConditional;
  RETURN_IF_ERROR(denoiser.ScoreField(all_timesteps.front(), field_kind, prepared).status());
  Trajectory trajectory;
  // The field (s^Δ, or s) at each state whose sampling step computed it.
  std::vector<at::Tensor> observed_fields(static_cast<size_t>(steps));
  if (steps == 1) {
    RETURN_IF_ERROR(CheckStop(stop));
    ASSIGN_OR_RETURN(at::Tensor x_T, StartingState(network, seeds, options.sampler));
    trajectory.states.push_back(std::move(x_T));
  } else {
    SamplerOptions sampler = options.sampler;
    sampler.stop_after_steps = steps - 1;
    sampler.keep_states = true;
    sampler.observe_null_epsilon = conditional;
    sampler.observe_epsilon = [&](const StepEpsilon& step) {
      // As the score fields compute it: ε̂·(−1/σ_t).
      const double inverse_sigma = 1.0 / denoiser.schedule().sigma(all_timesteps[step.step]);
      observed_fields[step.step] =
          (conditional ? step.conditional - step.null : step.conditional) * (-inverse_sigma);
      return absl::OkStatus();
    };
    ASSIGN_OR_RETURN(trajectory, SampleTrajectories(denoiser, seeds, prepared, sampler, stop));
    trajectory.states.push_back(trajectory.final_sample);
  }
  trajectory.timesteps.assign(all_timesteps.begin(), all_timesteps.begin() + steps);

  EarlyMetricSamples result;
  result.conditional = conditional;
  result.timesteps = trajectory.timesteps;
  if (conditional) {
    // Denoising-free, at x_T whatever K is; at K = 1 its call at the first
    // timestep is also Wen's and Jeon's field there.
    const int64_t t_first = all_timesteps.front();
    result.alignment_timestep = AlignmentTimestep(all_timesteps);
    const double sigma_first = denoiser.schedule().sigma(t_first);
    at::Tensor known_difference;  // ε̂_c − ε̂_∅ at x_T, when sampling computed it
    if (observed_fields[0].defined()) known_difference = observed_fields[0] * (-sigma_first);
    try {
      RETURN_IF_ERROR(CheckStop(stop));
      AnisotropyParts parts = MeasureAnisotropy(denoiser, trajectory.states[0], prepared, t_first,
                                                result.alignment_timestep, known_difference);
      result.anisotropy_norm = RowNorms(parts.first_difference, /*squared=*/false);
      result.anisotropy_alignment = std::move(parts.alignment);
      if (!observed_fields[0].defined()) {
        observed_fields[0] = parts.first_difference * (-1.0 / sigma_first);
      }
    } catch (const std::exception& e) {
      return TorchError(absl::StatusCode::kInternal, "early metrics failed", e);
    }
  }
  const at::Tensor rows =
      at::arange(batch, at::TensorOptions().dtype(at::kLong).device(network.device()));
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(options.probe_seed);
  try {
    for (int64_t k = 0; k < steps; ++k) {
      RETURN_IF_ERROR(CheckStop(stop));
      const at::Tensor& x = trajectory.states[k];
      const int64_t t = trajectory.timesteps[k];
      if (conditional) {
        ASSIGN_OR_RETURN(const Field difference, denoiser.ScoreField(t, field_kind, prepared));
        at::Tensor score_difference = observed_fields[k];
        if (!score_difference.defined()) {
          c10::NoGradGuard no_grad;
          score_difference = difference(x, rows);
        }
        // ε̂_c − ε̂_∅ = −σ_t·(s_c − s_∅).
        std::vector<double> wen = RowNorms(score_difference, /*squared=*/false);
        for (double& w : wen) w *= denoiser.schedule().sigma(t);
        Accumulate(result.wen, wen, steps);
        if (!options.derivative_metrics) continue;
        ASSIGN_OR_RETURN(const at::Tensor product, Jvp(difference, x, rows, score_difference));
        Accumulate(result.jeon, RowNorms(product, /*squared=*/false), steps);
      } else {
        ASSIGN_OR_RETURN(const Field field, denoiser.ScoreField(t, field_kind, prepared));
        at::Tensor score = observed_fields[k];
        if (!score.defined()) {
          c10::NoGradGuard no_grad;
          score = field(x, rows);
        }
        Accumulate(result.score_norm_squared, RowNorms(score, /*squared=*/true), steps);
        if (!options.derivative_metrics) continue;
        ASSIGN_OR_RETURN(const at::Tensor product, Jvp(field, x, rows, score));
        Accumulate(result.hessian_score_squared, RowNorms(product, /*squared=*/true), steps);
        // Hutchinson with P Rademacher probes per sample: zᵀHz = zᵀ(Hᵀz), so
        // each probe is one backward pass of the batch over one kept forward
        // at x (RetainedVjp) rather than a JVP row: P backward passes of B
        // rows cost less than one JVP of P·B rows (docs/PERFORMANCE.md). The
        // probes are drawn as [B·P] rows, sample-major, as before.
        const int64_t probes = options.hutchinson_probes;
        std::vector<int64_t> probe_shape = x.sizes().vec();
        probe_shape[0] = batch * probes;
        at::Tensor z = (at::randint(2, probe_shape, generator, at::kFloat) * 2 - 1)
                           .to(x.device(), x.scalar_type());
        std::vector<int64_t> by_probe = x.sizes().vec();
        by_probe.insert(by_probe.begin() + 1, probes);
        z = z.view(by_probe);  // [B, P, *shape]
        absl::StatusOr<RetainedVjp> transpose = RetainedVjp::Create(field, x, rows);
        at::Tensor quadratic = at::zeros({batch}, x.options().dtype(at::kDouble));
        for (int64_t p = 0; p < probes; ++p) {
          RETURN_IF_ERROR(CheckStop(stop));
          const at::Tensor probe = z.select(1, p).contiguous();
          absl::StatusOr<at::Tensor> hz =
              transpose.ok() ? transpose->Apply(probe) : transpose.status();
          // A model without a backward pass (a no_grad block, an op without a
          // backward formula) still has JVPs: zᵀHz directly.
          if (!hz.ok() && IsMissingBackward(hz.status())) hz = Jvp(field, x, rows, probe);
          if (!hz.ok()) return hz.status();
          quadratic += (probe * *hz).reshape({batch, -1}).to(at::kDouble).sum(1);
        }
        Accumulate(result.hutchinson_trace, ToVector(quadratic / static_cast<double>(probes)),
                   steps);
      }
    }
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInternal, "early metrics failed", e);
  }
  RETURN_IF_ERROR(CheckFinite(result, network.config().name(), seeds));
  return result;
}

}  // namespace memaudit
