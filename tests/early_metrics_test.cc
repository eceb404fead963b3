// Early metrics against closed forms on exact Gaussian-mixture models.
#include "core/early/early_metrics.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>

#include "core/spectra/curvature.h"
#include "tests/mixture_oracle.h"
#include "tests/test_util.h"
#include "tools/toy/model_directory.h"
#include "tools/toy/toy_mlp.h"

namespace memaudit {
namespace {

using testing::ScratchDir;

Eigen::VectorXd Row(const at::Tensor& x, int64_t b) {
  at::Tensor row = x[b].to(at::kDouble).contiguous().view(-1);
  return Eigen::Map<const Eigen::VectorXd>(row.data_ptr<double>(), row.numel());
}

// The exact model of N(μ, s²I) with μ = kGaussianMean·1 and s² =
// kGaussianVariance in kGaussianDim dimensions.
constexpr int64_t kGaussianDim = 8;
constexpr double kGaussianMean = 0.5, kGaussianVariance = 0.04;
std::shared_ptr<const DiffusionNetwork> IsotropicGaussian(const ScratchDir& dir) {
  toy::GaussianMixture g;
  g.weights = at::ones({1}, at::kDouble);
  g.means = at::full({1, kGaussianDim}, kGaussianMean, at::kDouble);
  g.covariances = (kGaussianVariance * at::eye(kGaussianDim, at::kDouble)).unsqueeze(0);
  return testing::WriteAndLoadMixture(dir.path(), "g", g, v1::NoiseSchedule::LINEAR, v1::EPSILON);
}

// The noised variance v = ᾱs² + σ² at timestep t.
double NoisedVariance(const Denoiser& denoiser, int64_t t) {
  const double alpha_bar = denoiser.schedule().alpha_bar(t);
  return alpha_bar * kGaussianVariance + 1.0 - alpha_bar;
}

// For N(μ, s²I): H = −I/v with v = ᾱs² + σ², so zᵀHz = −d/v for every
// Rademacher z, and ‖Hs‖² = ‖s‖²/v² exactly.
TEST(EarlyMetricsTest, UnconditionalGaussianClosedForms) {
  ScratchDir dir;
  const int64_t d = kGaussianDim;
  Denoiser denoiser(IsotropicGaussian(dir));
  EarlyMetricOptions options;
  options.steps = 1;
  auto metrics = ComputeEarlyMetrics(denoiser, {1, 2, 3}, at::Tensor(), options);
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_FALSE(metrics->conditional);
  ASSERT_EQ(metrics->timesteps.size(), 1u);
  const int64_t t = metrics->timesteps[0];
  EXPECT_EQ(t, 980);  // first of 50 leading steps
  const double v = NoisedVariance(denoiser, t);
  ASSERT_EQ(metrics->hutchinson_trace.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(metrics->hutchinson_trace[i], -d / v, 1e-9 * d / v);
    EXPECT_NEAR(metrics->hessian_score_squared[i], metrics->score_norm_squared[i] / (v * v),
                1e-9 * metrics->score_norm_squared[i] / (v * v));
  }
  // E‖s‖² = −tr H = d/v: the sample mean of ‖s‖² over many seeds.
  std::vector<uint64_t> seeds(400);
  for (int i = 0; i < 400; ++i) seeds[i] = 100 + i;
  auto many = ComputeEarlyMetrics(denoiser, seeds, at::Tensor(), options);
  ASSERT_TRUE(many.ok());
  EXPECT_NEAR(Mean(many->score_norm_squared), d / v, 0.15 * d / v);
}

// Hutchinson's tr H on a network whose H is neither isotropic nor
// symmetric (where zᵀHz = −d/v for every probe would hide a wrong probe or
// product): with many probes the estimate is within 5 standard errors of
// the trace of the dense Jacobian at x_T, the error computed from that
// Jacobian (Var zᵀAz = ½ Σ_{i≠j} (A_ij + A_ji)² for Rademacher z).
TEST(EarlyMetricsTest, HutchinsonTraceMatchesTheDenseJacobiansTrace) {
  ScratchDir dir;
  const int64_t d = 16;
  torch::jit::Module mlp = toy::BuildToyMlp(d, toy::MlpOptions{}, /*seed=*/7);
  ASSERT_TRUE(toy::WriteModelDirectory(dir.path(), testing::MixtureConfig("mlp", d), mlp).ok());
  CheckpointOptions checkpoint_options;
  checkpoint_options.dtype = at::kDouble;
  auto checkpoint = LoadModel(dir.Join("mlp"), checkpoint_options);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  Denoiser denoiser(*checkpoint);
  EarlyMetricOptions options;
  options.hutchinson_probes = 4000;
  const std::vector<uint64_t> seeds = {11, 12};
  auto metrics = ComputeEarlyMetrics(denoiser, seeds, at::Tensor(), options);
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  SamplerOptions sampler = options.sampler;
  sampler.stop_after_steps = 1;
  auto trajectory = SampleTrajectories(denoiser, seeds, at::Tensor(), sampler);
  ASSERT_TRUE(trajectory.ok()) << trajectory.status();
  auto field = denoiser.ScoreField(metrics->timesteps[0], ScoreKind::kConditional, at::Tensor());
  ASSERT_TRUE(field.ok());
  auto jacobians = DenseJacobians(*field, trajectory->states[0], at::arange(2, at::kLong));
  ASSERT_TRUE(jacobians.ok()) << jacobians.status();
  for (int64_t b = 0; b < 2; ++b) {
    const at::Tensor a = (*jacobians)[b];
    const double trace = a.trace().item<double>();
    const at::Tensor sym = a + a.t();
    const double variance =
        0.5 * (sym.pow(2).sum().item<double>() - sym.diagonal().pow(2).sum().item<double>());
    const double standard_error = std::sqrt(variance / options.hutchinson_probes);
    ASSERT_GT(standard_error, 0);
    EXPECT_NEAR(metrics->hutchinson_trace[b], trace, 5 * standard_error) << b;
    // Not a trivially exact case: the probes matter.
    EXPECT_GT(standard_error, 1e-6 * std::abs(trace)) << b;
  }
  // The same probes as the JVP form drew (rows b·P + p of one [B·P] draw
  // from probe_seed), so the estimate is zᵀHz of those probes to rounding.
  const int64_t probes = options.hutchinson_probes;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(options.probe_seed);
  at::Tensor z = (at::randint(2, {2 * probes, d}, generator, at::kFloat) * 2 - 1).to(at::kDouble);
  auto hz = Jvp(*field, trajectory->states[0].repeat_interleave(probes, 0),
                at::arange(2, at::kLong).repeat_interleave(probes, 0), z);
  ASSERT_TRUE(hz.ok()) << hz.status();
  const at::Tensor by_jvp = (z * *hz).reshape({2, probes, d}).sum(2).mean(1);
  for (int64_t b = 0; b < 2; ++b) {
    const double expected = by_jvp[b].item<double>();
    EXPECT_NEAR(metrics->hutchinson_trace[b], expected, 1e-10 * std::abs(expected)) << b;
  }
}

// The same closed forms over K = 3 steps, where the fields at the first two
// states come from the sampling calls: per state s = −(x − √ᾱ·μ)/v and
// H s = −s/v, so ‖s‖² and ‖Hs‖² are known from the sampled states.
TEST(EarlyMetricsTest, UnconditionalClosedFormsOverSeveralSteps) {
  ScratchDir dir;
  const int64_t d = kGaussianDim;
  Denoiser denoiser(IsotropicGaussian(dir));
  EarlyMetricOptions options;
  options.steps = 3;
  const std::vector<uint64_t> seeds = {4, 5};
  auto metrics = ComputeEarlyMetrics(denoiser, seeds, at::Tensor(), options);
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  SamplerOptions sampler = options.sampler;
  sampler.stop_after_steps = 3;
  auto trajectory = SampleTrajectories(denoiser, seeds, at::Tensor(), sampler);
  ASSERT_TRUE(trajectory.ok()) << trajectory.status();
  for (int64_t b = 0; b < 2; ++b) {
    double score = 0, hessian_score = 0, trace = 0;
    for (int64_t k = 0; k < 3; ++k) {
      const int64_t t = trajectory->timesteps[k];
      const double v = NoisedVariance(denoiser, t);
      const double shift = std::sqrt(denoiser.schedule().alpha_bar(t)) * kGaussianMean;
      const double squared =
          (trajectory->states[k][b] - shift).pow(2).sum().item<double>() / (v * v);
      score += squared / 3;
      hessian_score += squared / (v * v) / 3;
      trace += -d / v / 3;
    }
    EXPECT_NEAR(metrics->score_norm_squared[b], score, 1e-9 * score) << b;
    EXPECT_NEAR(metrics->hessian_score_squared[b], hessian_score, 1e-9 * hessian_score) << b;
    EXPECT_NEAR(metrics->hutchinson_trace[b], trace, 1e-9 * std::abs(trace)) << b;
  }
}

// A real condition needs the null condition; a model without one says so
// before any sampling, at every K.
TEST(EarlyMetricsTest, AModelWithoutANullConditionIsAFailedPrecondition) {
  ScratchDir dir;
  v1::ModelConfig config = testing::MixtureConfig("embedded", 3);
  config.mutable_conditioning()->set_kind(v1::Conditioning::EMBEDDING);
  config.mutable_conditioning()->add_embedding_shape(2);
  auto schedule = NoiseSchedule::Create(config.noise_schedule());
  auto module =
      toy::BuildGaussianMixtureModule(toy::RandomGaussianMixture(3, 2, 1, 2), *schedule,
                                      v1::EPSILON, 2, toy::MixtureConditioning::kEmbedding);
  ASSERT_TRUE(module.ok()) << module.status();
  ASSERT_TRUE(toy::WriteModelDirectory(dir.path(), config, *module).ok());
  auto checkpoint = LoadModel(dir.Join("embedded"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  Denoiser denoiser(*checkpoint);
  for (int64_t steps : {1, 2}) {
    EarlyMetricOptions options;
    options.steps = steps;
    auto metrics = ComputeEarlyMetrics(denoiser, {1}, at::ones({1, 2}), options);
    EXPECT_EQ(metrics.status().code(), absl::StatusCode::kFailedPrecondition)
        << steps << ": " << metrics.status();
  }
}

// A model that passes the load probe (t = 0 and T − 1) but returns NaN at
// the first sampling timestep: at K = 1 no sampling step sees it, so the
// metrics themselves must refuse it rather than report a NaN, which no
// threshold flags.
TEST(EarlyMetricsTest, NonFiniteMetricsAreAnErrorNamingModelMetricAndSeed) {
  ScratchDir dir;
  ASSERT_TRUE(testing::WriteScriptedModel(
                  dir.path(), testing::MixtureConfig("nan_first", 2),
                  "def forward(self, x: Tensor, t: Tensor) -> Tensor:\n"
                  "    bad = ((t > 850) & (t < 950)).view([-1, 1])\n"
                  "    return torch.where(bad, torch.full_like(x, float('nan')), x * 0.5)\n")
                  .ok());
  auto checkpoint = LoadModel(dir.Join("nan_first"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  Denoiser denoiser(*checkpoint);
  for (bool derivatives : {true, false}) {
    EarlyMetricOptions options;
    options.sampler.num_steps = 10;  // the first timestep is 900
    options.derivative_metrics = derivatives;
    auto metrics = ComputeEarlyMetrics(denoiser, {7, 8}, at::Tensor(), options);
    ASSERT_FALSE(metrics.ok()) << derivatives;
    EXPECT_EQ(metrics.status().code(), absl::StatusCode::kFailedPrecondition);
    const std::string message(metrics.status().message());
    EXPECT_NE(message.find("\"nan_first\""), std::string::npos) << message;
    EXPECT_NE(message.find("score_norm_squared"), std::string::npos) << message;
    EXPECT_NE(message.find("seed 7"), std::string::npos) << message;
  }
  // Elsewhere on the schedule the same model is fine.
  EarlyMetricOptions options;
  options.sampler.num_steps = 20;  // the first timestep is 950
  EXPECT_TRUE(ComputeEarlyMetrics(denoiser, {7}, at::Tensor(), options).ok());
}

// The exact model of a 2-class `mixture` on the scaled-linear schedule, in
// float64.
std::shared_ptr<const DiffusionNetwork> ConditionalMixture(const ScratchDir& dir,
                                                           const toy::GaussianMixture& mixture) {
  return testing::WriteAndLoadMixture(dir.path(), "c", mixture, v1::NoiseSchedule::SCALED_LINEAR,
                                      v1::EPSILON, at::kDouble, /*classes=*/2);
}

// Wen's ‖ε̂_c − ε̂_∅‖ and Jeon's ‖H^Δ s^Δ‖ against the oracle at the sampled
// states, averaged over K = 3 steps.
TEST(EarlyMetricsTest, ConditionalMetricsMatchTheOracle) {
  ScratchDir dir;
  const toy::GaussianMixture mixture = toy::RandomGaussianMixture(6, 4, /*seed=*/12, 2);
  Denoiser denoiser(ConditionalMixture(dir, mixture));
  const std::vector<uint64_t> seeds = {4, 5};
  const at::Tensor labels = at::tensor({0, 1}, at::kLong);
  EarlyMetricOptions options;
  options.steps = 3;
  options.sampler.guidance = 2.0;
  auto metrics = ComputeEarlyMetrics(denoiser, seeds, labels, options);
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_TRUE(metrics->conditional);
  ASSERT_EQ(metrics->timesteps.size(), 3u);

  SamplerOptions sampler = options.sampler;
  sampler.stop_after_steps = 3;
  auto trajectory = SampleTrajectories(denoiser, seeds, labels, sampler);
  ASSERT_TRUE(trajectory.ok());
  for (int64_t b = 0; b < 2; ++b) {
    std::vector<bool> in_class(mixture.size());
    for (int64_t k = 0; k < mixture.size(); ++k) {
      in_class[k] = mixture.classes[k].item<int64_t>() == b;
    }
    double wen = 0, jeon = 0;
    for (int64_t k = 0; k < 3; ++k) {
      const int64_t t = trajectory->timesteps[k];
      const double alpha_bar = denoiser.schedule().alpha_bar(t);
      const Eigen::VectorXd x = Row(trajectory->states[k], b);
      auto c = testing::ExactMixtureDerivatives(mixture, alpha_bar, x, in_class);
      auto u = testing::ExactMixtureDerivatives(mixture, alpha_bar, x);
      const Eigen::VectorXd score_difference = c.score - u.score;
      wen += denoiser.schedule().sigma(t) * score_difference.norm() / 3;
      jeon += ((c.hessian - u.hessian) * score_difference).norm() / 3;
    }
    EXPECT_NEAR(metrics->wen[b], wen, 1e-8 * (1 + wen)) << b;
    EXPECT_NEAR(metrics->jeon[b], jeon, 1e-8 * (1 + jeon)) << b;
  }
}

// Each sampling step's call also gives the metrics' field at its state, so
// K steps cost what the Python peer's loop costs: per step one call and one
// JVP for Wen + Jeon (2K, and one call for the anisotropy's low timestep);
// unconditionally one call, one JVP and the kept
// forward the Hutchinson probes go backward through (3K; the peer's second
// JVP).
TEST(EarlyMetricsTest, KStepsCostOneCallPerStepBesidesTheJvps) {
  ScratchDir dir;
  ASSERT_TRUE(testing::WriteMixtureDirectory(dir.path(), "c",
                                             toy::RandomGaussianMixture(4, 3, 2, 2),
                                             v1::NoiseSchedule::LINEAR, v1::EPSILON, 2)
                  .ok());
  int64_t calls = 0;
  CheckpointOptions checkpoint_options;
  checkpoint_options.dtype = at::kDouble;
  checkpoint_options.forward_observer = [&calls](int64_t, bool) { ++calls; };
  auto checkpoint = LoadModel(dir.Join("c"), checkpoint_options);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  Denoiser denoiser(*checkpoint);
  for (double guidance : {1.0, 3.0}) {
    for (int64_t steps : {1, 2, 5}) {
      EarlyMetricOptions options;
      options.steps = steps;
      options.sampler.guidance = guidance;
      calls = 0;
      auto conditional =
          ComputeEarlyMetrics(denoiser, {1, 2}, at::tensor({0, 1}, at::kLong), options);
      ASSERT_TRUE(conditional.ok()) << conditional.status();
      ASSERT_TRUE(conditional->conditional);
      // The anisotropy pair at x_T: one call more, at the low timestep
      // (its call at the first timestep is the one that gives the field at
      // x_T, from sampling or, at K = 1, for Wen and Jeon too).
      EXPECT_EQ(calls, 2 * steps + 1) << "guidance " << guidance << ", K = " << steps;
      calls = 0;
      auto unconditional =
          ComputeEarlyMetrics(denoiser, {1, 2}, at::tensor({2, 2}, at::kLong), options);
      ASSERT_TRUE(unconditional.ok()) << unconditional.status();
      ASSERT_FALSE(unconditional->conditional);
      EXPECT_EQ(calls, 3 * steps) << "guidance " << guidance << ", K = " << steps;

      // Forward-only: no JVP and no kept forward; the field at each of the K
      // states (K − 1 of them from sampling) and the low timestep.
      options.derivative_metrics = false;
      calls = 0;
      auto forward = ComputeEarlyMetrics(denoiser, {1, 2}, at::tensor({0, 1}, at::kLong), options);
      ASSERT_TRUE(forward.ok()) << forward.status();
      EXPECT_EQ(calls, steps + 1) << "forward-only, K = " << steps;
      EXPECT_TRUE(forward->jeon.empty());
      EXPECT_EQ(forward->wen, conditional->wen);
      EXPECT_EQ(forward->anisotropy_alignment, conditional->anisotropy_alignment);
      calls = 0;
      auto forward_unconditional =
          ComputeEarlyMetrics(denoiser, {1, 2}, at::tensor({2, 2}, at::kLong), options);
      ASSERT_TRUE(forward_unconditional.ok());
      EXPECT_EQ(calls, steps) << "forward-only unconditional, K = " << steps;
      EXPECT_TRUE(forward_unconditional->hutchinson_trace.empty());
      EXPECT_EQ(forward_unconditional->score_norm_squared, unconditional->score_norm_squared);
    }
  }
}

// sampler.initial_state is where the metrics start at every K (K = 1 makes
// no sampling step, and once drew the seeds' x_T regardless): seeds {1, 2}
// started from the x_T of seeds {7, 8} give seeds {7, 8}'s metrics (DDIM
// adds no noise per step), and a state of another shape is refused.
TEST(EarlyMetricsTest, AnInitialStateIsWhereTheMetricsStartAtEveryK) {
  ScratchDir dir;
  const toy::GaussianMixture mixture = toy::RandomGaussianMixture(6, 4, /*seed=*/17, 2);
  auto checkpoint = ConditionalMixture(dir, mixture);
  Denoiser denoiser(checkpoint);
  const at::Tensor labels = at::tensor({0, 1}, at::kLong);
  for (int64_t steps : {1, 2}) {
    SCOPED_TRACE(steps);
    EarlyMetricOptions options;
    options.steps = steps;
    options.sampler.guidance = 7.5;
    auto own = ComputeEarlyMetrics(denoiser, {7, 8}, labels, options);
    ASSERT_TRUE(own.ok()) << own.status();
    options.sampler.initial_state = InitialNoise(*checkpoint, {7, 8});
    auto moved = ComputeEarlyMetrics(denoiser, {1, 2}, labels, options);
    ASSERT_TRUE(moved.ok()) << moved.status();
    for (size_t b = 0; b < 2; ++b) {
      EXPECT_DOUBLE_EQ(moved->wen[b], own->wen[b]);
      EXPECT_DOUBLE_EQ(moved->jeon[b], own->jeon[b]);
      EXPECT_DOUBLE_EQ(moved->anisotropy_norm[b], own->anisotropy_norm[b]);
      EXPECT_DOUBLE_EQ(moved->anisotropy_alignment[b], own->anisotropy_alignment[b]);
    }
    options.sampler.initial_state = InitialNoise(*checkpoint, {7, 8, 9});
    auto wrong = ComputeEarlyMetrics(denoiser, {1, 2}, labels, options);
    ASSERT_FALSE(wrong.ok());
    EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(wrong.status().message().find("initial_state"), std::string::npos);
  }
}

// The anisotropy pair (Asthana & Belagiannis) at x_T against the oracle:
// ‖ε̂_c − ε̂_∅‖ = σ·‖s_c − s_∅‖ at the first timestep and
// cos(ε̂_∅, ε̂_c − ε̂_∅) = cos(s_∅, s_c − s_∅) at the third-to-last one,
// the same whatever K and the guidance are.
TEST(EarlyMetricsTest, AnisotropyMatchesTheOracleAtTheInitialNoise) {
  ScratchDir dir;
  const toy::GaussianMixture mixture = toy::RandomGaussianMixture(6, 4, /*seed=*/31, 2);
  auto checkpoint = ConditionalMixture(dir, mixture);
  Denoiser denoiser(checkpoint);
  const std::vector<uint64_t> seeds = {7, 8, 9};
  const at::Tensor labels = at::tensor({0, 1, 1}, at::kLong);
  const at::Tensor x_T = InitialNoise(*checkpoint, seeds);
  for (int64_t steps : {1, 3}) {
    for (int64_t offset : {0, 1}) {
      EarlyMetricOptions options;
      options.steps = steps;
      options.sampler.guidance = 7.5;
      options.sampler.steps_offset = offset;
      auto metrics = ComputeEarlyMetrics(denoiser, seeds, labels, options);
      ASSERT_TRUE(metrics.ok()) << metrics.status();
      // 50 leading steps of T = 1000: 980, 960, ..., 20, 0 (+ offset).
      EXPECT_EQ(metrics->alignment_timestep, 40 + offset);
      const int64_t t_first = metrics->timesteps.front();
      EXPECT_EQ(t_first, 980 + offset);
      ASSERT_EQ(metrics->anisotropy_norm.size(), 3u);
      ASSERT_EQ(metrics->anisotropy_alignment.size(), 3u);
      for (int64_t b = 0; b < 3; ++b) {
        const int64_t label = labels[b].item<int64_t>();
        std::vector<bool> in_class(mixture.size());
        for (int64_t k = 0; k < mixture.size(); ++k) {
          in_class[k] = mixture.classes[k].item<int64_t>() == label;
        }
        const Eigen::VectorXd x = Row(x_T, b);
        auto first_c = testing::ExactMixtureDerivatives(
            mixture, denoiser.schedule().alpha_bar(t_first), x, in_class);
        auto first_u =
            testing::ExactMixtureDerivatives(mixture, denoiser.schedule().alpha_bar(t_first), x);
        const double norm =
            denoiser.schedule().sigma(t_first) * (first_c.score - first_u.score).norm();
        const double low_alpha_bar = denoiser.schedule().alpha_bar(metrics->alignment_timestep);
        auto low_c = testing::ExactMixtureDerivatives(mixture, low_alpha_bar, x, in_class);
        auto low_u = testing::ExactMixtureDerivatives(mixture, low_alpha_bar, x);
        const Eigen::VectorXd guidance = low_c.score - low_u.score;
        const double cosine = low_u.score.dot(guidance) / (low_u.score.norm() * guidance.norm());
        EXPECT_NEAR(metrics->anisotropy_norm[b], norm, 1e-8 * (1 + norm)) << b;
        EXPECT_NEAR(metrics->anisotropy_alignment[b], cosine, 1e-8) << b;
        EXPECT_GE(metrics->anisotropy_alignment[b], -1.0);
        EXPECT_LE(metrics->anisotropy_alignment[b], 1.0);
        // At K = 1 the norm is Wen's value: the same call.
        if (steps == 1) {
          EXPECT_DOUBLE_EQ(metrics->anisotropy_norm[b], metrics->wen[b]);
        }
      }
    }
  }
  // The table: both parts are per-sample values, the combination is not.
  auto metrics = ComputeEarlyMetrics(denoiser, seeds, labels, {});
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ(EarlyMetricValues(*metrics, EarlyMetric::kAnisotropyNorm), metrics->anisotropy_norm);
  EXPECT_EQ(EarlyMetricValues(*metrics, EarlyMetric::kAnisotropyAlignment),
            metrics->anisotropy_alignment);
  EXPECT_TRUE(EarlyMetricValues(*metrics, EarlyMetric::kAnisotropy).empty());
  EXPECT_TRUE(EarlyMetricInfoOf(EarlyMetric::kAnisotropy).among_conditions);
  EXPECT_FALSE(EarlyMetricInfoOf(EarlyMetric::kAnisotropyAlignment).derivative);
  EXPECT_TRUE(EarlyMetricInfoOf(EarlyMetric::kJeonSharpness).derivative);
}

TEST(EarlyMetricsTest, AlignmentTimestepIsTheThirdToLast) {
  EXPECT_EQ(AlignmentTimestep({980, 960, 940, 20, 0}), 940);
  EXPECT_EQ(AlignmentTimestep({981, 961, 41, 21, 1}), 41);
  EXPECT_EQ(AlignmentTimestep({500, 0}), 500);
  EXPECT_EQ(AlignmentTimestep({7}), 7);
}

TEST(EarlyMetricsTest, NullConditionGivesUnconditionalMetrics) {
  ScratchDir dir;
  auto checkpoint =
      testing::WriteAndLoadMixture(dir.path(), "c", toy::RandomGaussianMixture(4, 2, 1, 2),
                                   v1::NoiseSchedule::LINEAR, v1::EPSILON, at::kDouble, 2);
  Denoiser denoiser(checkpoint);
  auto metrics = ComputeEarlyMetrics(denoiser, {1}, at::tensor({2}, at::kLong), {});
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_FALSE(metrics->conditional);
  EXPECT_EQ(metrics->hutchinson_trace.size(), 1u);
  EarlyMetricOptions bad;
  bad.steps = 0;
  EXPECT_EQ(ComputeEarlyMetrics(denoiser, {1}, at::Tensor(), bad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace memaudit
