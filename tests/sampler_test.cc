#include "core/model/sampler.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/audit/sample_curvature.h"
#include "core/checkpoint/load_model.h"
#include "tests/test_util.h"

namespace memaudit {
namespace {

using testing::ScratchDir;

std::vector<uint64_t> Seeds(int64_t count, uint64_t first = 0) {
  std::vector<uint64_t> seeds(count);
  for (int64_t i = 0; i < count; ++i) seeds[i] = first + i;
  return seeds;
}

toy::GaussianMixture SingleGaussian(at::Tensor mean, double variance) {
  toy::GaussianMixture g;
  const int64_t d = mean.numel();
  g.weights = at::ones({1}, at::kDouble);
  g.means = mean.to(at::kDouble).view({1, d});
  g.covariances = (variance * at::eye(d, at::kDouble)).unsqueeze(0);
  return g;
}

// diffusers: DDIMScheduler(steps_offset=1).set_timesteps(50) gives
// 981, 961, ..., 1 for Stable Diffusion.
TEST(LeadingTimestepsTest, MatchesDiffusers) {
  auto sd = LeadingTimesteps(1000, 50, 1);
  ASSERT_TRUE(sd.ok());
  ASSERT_EQ(sd->size(), 50u);
  EXPECT_EQ(sd->front(), 981);
  EXPECT_EQ((*sd)[1], 961);
  EXPECT_EQ(sd->back(), 1);
  auto ten = LeadingTimesteps(1000, 10, 0);
  ASSERT_TRUE(ten.ok());
  EXPECT_EQ(*ten, (std::vector<int64_t>{900, 800, 700, 600, 500, 400, 300, 200, 100, 0}));
  auto odd = LeadingTimesteps(1000, 3, 0);  // ratio 333
  EXPECT_EQ(*odd, (std::vector<int64_t>{666, 333, 0}));
  EXPECT_FALSE(LeadingTimesteps(1000, 0, 0).ok());
  EXPECT_FALSE(LeadingTimesteps(1000, 1001, 0).ok());
  EXPECT_FALSE(LeadingTimesteps(1000, 10, 100).ok());
}

// A sample depends only on its seed: same seeds, same samples, whatever the
// batch around them; different seeds differ. An initial state replaces the
// seeded x_T and nothing else: the seeds' own x_T gives the seeded run
// exactly (so the per-step noise is unchanged), another x_T another
// sample, a wrong shape an error.
TEST(SamplerTest, SeededAndBatchIndependent) {
  ScratchDir dir;
  auto checkpoint =
      testing::WriteAndLoadMixture(dir.path(), "mix", toy::RandomGaussianMixture(3, 3, 1),
                                   v1::NoiseSchedule::LINEAR, v1::EPSILON, at::kFloat);
  Denoiser denoiser(checkpoint);
  for (SamplerKind kind : {SamplerKind::kDdim, SamplerKind::kDdpm}) {
    SamplerOptions options;
    options.kind = kind;
    options.num_steps = 20;
    options.eta = 0.5;
    auto first = SampleTrajectories(denoiser, Seeds(4, 10), at::Tensor(), options);
    auto again = SampleTrajectories(denoiser, Seeds(4, 10), at::Tensor(), options);
    auto alone = SampleTrajectories(denoiser, {12}, at::Tensor(), options);
    ASSERT_TRUE(first.ok() && again.ok() && alone.ok());
    EXPECT_TRUE(at::equal(first->final_sample, again->final_sample));
    EXPECT_TRUE(at::allclose(first->final_sample[2], alone->final_sample[0], 1e-5, 1e-6));
    EXPECT_FALSE(at::allclose(first->final_sample[0], first->final_sample[1]));
    EXPECT_EQ(first->states.size(), 20u);
    EXPECT_EQ(first->timesteps.size(), 20u);
    EXPECT_EQ(first->network_evaluations, 4 * 20);

    EXPECT_TRUE(at::equal(InitialNoise(*checkpoint, Seeds(4, 10)), first->states.front()));
    options.initial_state = first->states.front().clone();
    auto same = SampleTrajectories(denoiser, Seeds(4, 10), at::Tensor(), options);
    ASSERT_TRUE(same.ok()) << same.status();
    EXPECT_TRUE(at::equal(same->final_sample, first->final_sample));
    options.initial_state = -first->states.front();
    auto moved = SampleTrajectories(denoiser, Seeds(4, 10), at::Tensor(), options);
    ASSERT_TRUE(moved.ok());
    EXPECT_TRUE(at::equal(moved->states.front(), options.initial_state));
    EXPECT_FALSE(at::allclose(moved->final_sample, first->final_sample));
    options.initial_state = at::zeros({3, 3});
    EXPECT_EQ(SampleTrajectories(denoiser, Seeds(4, 10), at::Tensor(), options).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

// Both samplers reproduce a Gaussian's mean and standard deviation.
TEST(SamplerTest, SamplesHaveTheModelsDistribution) {
  ScratchDir dir;
  const at::Tensor mean = at::tensor({1.5, -2.0}, at::kDouble);
  const double std_dev = 0.5;
  auto checkpoint =
      testing::WriteAndLoadMixture(dir.path(), "g", SingleGaussian(mean, std_dev * std_dev),
                                   v1::NoiseSchedule::LINEAR, v1::EPSILON, at::kFloat);
  Denoiser denoiser(checkpoint);
  for (SamplerKind kind : {SamplerKind::kDdim, SamplerKind::kDdpm}) {
    SamplerOptions options;
    options.kind = kind;
    options.num_steps = 100;
    auto result = SampleTrajectories(denoiser, Seeds(2000), at::Tensor(), options);
    ASSERT_TRUE(result.ok()) << result.status();
    at::Tensor samples = result->final_sample.to(at::kDouble);
    at::Tensor sample_mean = samples.mean(0);
    at::Tensor sample_std = samples.std(0);
    for (int64_t j = 0; j < 2; ++j) {
      EXPECT_NEAR(sample_mean[j].item<double>(), mean[j].item<double>(), 0.05)
          << (kind == SamplerKind::kDdim ? "ddim" : "ddpm");
      EXPECT_NEAR(sample_std[j].item<double>(), std_dev, 0.05);
    }
  }
}

// Guided class-conditional sampling lands in the requested class.
TEST(SamplerTest, GuidanceSamplesTheRequestedClass) {
  ScratchDir dir;
  toy::GaussianMixture mixture;
  mixture.weights = at::ones({2}, at::kDouble);
  mixture.means = at::tensor({-3.0, 0.0, 3.0, 0.0}, at::kDouble).view({2, 2});
  mixture.covariances = (0.1 * at::eye(2, at::kDouble)).expand({2, 2, 2}).contiguous();
  mixture.classes = at::tensor({0, 1}, at::kLong);
  auto checkpoint = testing::WriteAndLoadMixture(
      dir.path(), "cls", mixture, v1::NoiseSchedule::LINEAR, v1::EPSILON, at::kFloat, 2);
  Denoiser denoiser(checkpoint);
  SamplerOptions options;
  options.num_steps = 50;
  options.guidance = 3.0;
  at::Tensor labels = at::cat({at::zeros({50}, at::kLong), at::ones({50}, at::kLong)});
  auto result = SampleTrajectories(denoiser, Seeds(100), labels, options);
  ASSERT_TRUE(result.ok()) << result.status();
  at::Tensor x = result->final_sample.select(1, 0);
  EXPECT_TRUE((x.narrow(0, 0, 50) < 0).all().item<bool>());
  EXPECT_TRUE((x.narrow(0, 50, 50) > 0).all().item<bool>());
  EXPECT_EQ(result->network_evaluations, 2 * 100 * 50);  // guided rows run twice
}

// SamplingRowsPerSample is the size of every network call sampling makes,
// as the checkpoint's observer sees it, and what the trajectory counts: for
// a class-conditional and an unconditional model, at guidance 0, 1 and 7.5,
// with and without an ε̂ observer, asking for ε̂_∅ or not.
TEST(SamplerTest, RowsPerSampleAreTheRowsOfEveryCall) {
  ScratchDir dir;
  constexpr int64_t kSeeds = 3, kSteps = 2;
  for (const int64_t classes : {int64_t{2}, int64_t{0}}) {
    const std::string name = classes > 0 ? "conditional" : "unconditional";
    ASSERT_TRUE(testing::WriteMixtureDirectory(dir.path(), name,
                                               toy::RandomGaussianMixture(3, 4, 5, classes),
                                               v1::NoiseSchedule::LINEAR, v1::EPSILON, classes)
                    .ok());
    std::vector<int64_t> rows_seen;
    CheckpointOptions options;
    options.forward_observer = [&](int64_t rows, bool) { rows_seen.push_back(rows); };
    auto network = LoadModel(dir.Join(name), options);
    ASSERT_TRUE(network.ok()) << network.status();
    Denoiser denoiser(*network);
    const at::Tensor labels = classes > 0 ? at::tensor({0, 1, 1}, at::kLong) : at::Tensor();
    for (const double guidance : {0.0, 1.0, 7.5}) {
      for (const int observer : {0, 1, 2}) {  // none, ε̂ only, ε̂ and ε̂_∅
        SamplerOptions sampler;
        sampler.num_steps = 10;
        sampler.stop_after_steps = kSteps;
        sampler.guidance = guidance;
        if (observer > 0) {
          sampler.observe_epsilon = [](const StepEpsilon&) { return absl::OkStatus(); };
          sampler.observe_null_epsilon = observer == 2;
        }
        const int64_t rows = SamplingRowsPerSample(**network, sampler);
        rows_seen.clear();
        auto result = SampleTrajectories(denoiser, Seeds(kSeeds), labels, sampler);
        ASSERT_TRUE(result.ok()) << result.status();
        const std::string context =
            absl::StrCat(name, ", guidance ", guidance, ", observer ", observer);
        EXPECT_EQ(rows_seen, std::vector<int64_t>(kSteps, kSeeds * rows)) << context;
        EXPECT_EQ(result->network_evaluations, kSteps * kSeeds * rows) << context;
        if (classes == 0) {
          EXPECT_EQ(rows, 1) << context;
        }
      }
    }
  }
}

// The observer sees, at each step, the network's ε̂ at the step's input
// state; asking for it changes neither the trajectory (bit for bit under
// guidance, where ε̂_c and ε̂_∅ are evaluated together anyway) nor, at
// w = 1 with ε̂_∅ requested too, more than rounding.
TEST(SamplerTest, ObservedEpsilonsAreTheNetworksAtEachState) {
  ScratchDir dir;
  const toy::GaussianMixture mixture = toy::RandomGaussianMixture(3, 4, /*seed=*/5, 2);
  auto checkpoint = testing::WriteAndLoadMixture(
      dir.path(), "obs", mixture, v1::NoiseSchedule::LINEAR, v1::EPSILON, at::kDouble, 2);
  Denoiser denoiser(checkpoint);
  const at::Tensor labels = at::tensor({0, 1, 1}, at::kLong);
  for (double guidance : {2.5, 1.0}) {
    SamplerOptions plain;
    plain.num_steps = 10;
    plain.stop_after_steps = 4;
    plain.guidance = guidance;
    auto expected = SampleTrajectories(denoiser, {7, 8, 9}, labels, plain);
    ASSERT_TRUE(expected.ok()) << expected.status();
    std::vector<StepEpsilon> seen;
    SamplerOptions observed = plain;
    observed.observe_null_epsilon = true;
    observed.observe_epsilon = [&](const StepEpsilon& step) {
      seen.push_back(step);
      return absl::OkStatus();
    };
    auto result = SampleTrajectories(denoiser, {7, 8, 9}, labels, observed);
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(seen.size(), 4u);
    EXPECT_EQ(result->network_evaluations, 2 * 3 * 4) << guidance;
    if (guidance != 1.0) {
      EXPECT_TRUE(at::equal(result->final_sample, expected->final_sample));
    } else {
      EXPECT_TRUE(at::allclose(result->final_sample, expected->final_sample, 1e-12, 1e-12));
    }
    for (size_t i = 0; i < seen.size(); ++i) {
      EXPECT_EQ(seen[i].step, i);
      EXPECT_TRUE(at::equal(seen[i].x, result->states[i]));
      const at::Tensor t = at::full({3}, result->timesteps[i], at::kLong);
      const auto [conditional, null] = denoiser.ConditionalAndNullEpsilon(seen[i].x, t, labels);
      EXPECT_TRUE(at::allclose(seen[i].conditional, conditional, 1e-12, 1e-12)) << i;
      EXPECT_TRUE(at::allclose(seen[i].null, null, 1e-12, 1e-12)) << i;
    }
  }
  // An observer's error stops sampling with it.
  SamplerOptions failing;
  failing.observe_epsilon = [](const StepEpsilon&) { return absl::AbortedError("enough"); };
  EXPECT_EQ(SampleTrajectories(denoiser, {1}, at::tensor({0}, at::kLong), failing).status().code(),
            absl::StatusCode::kAborted);
}

// For a point mass, DDIM (η = 0) is exact at every timestep:
// x_t = √ᾱ_t·μ + σ_t·(x_T − √ᾱ_T·μ)/σ_T. So states off the sampling grid
// (one DDIM move from a stored state) are checkable, and so are the states
// DeterministicStateAt reaches from an earlier step through the grid.
TEST(SamplerTest, StateAtTimestepOnAndOffTheGrid) {
  ScratchDir dir;
  const at::Tensor mu = at::tensor({0.7, -0.4, 1.1}, at::kDouble);
  auto checkpoint = testing::WriteAndLoadMixture(dir.path(), "pt", SingleGaussian(mu, 0.0),
                                                 v1::NoiseSchedule::LINEAR, v1::EPSILON);
  Denoiser denoiser(checkpoint);
  SamplerOptions options;
  options.num_steps = 10;  // timesteps 900, 800, ..., 0
  auto trajectory = SampleTrajectories(denoiser, Seeds(3), at::Tensor(), options);
  ASSERT_TRUE(trajectory.ok());
  const NoiseSchedule& s = denoiser.schedule();
  const at::Tensor x_start = trajectory->states.front();
  const int64_t t_start = trajectory->timesteps.front();
  const at::Tensor z = (x_start - s.sqrt_alpha_bar(t_start) * mu) / s.sigma(t_start);
  for (int64_t t : {800, 437, 21, 0}) {
    auto x = StateAtTimestep(denoiser, *trajectory, t, at::Tensor(), 1.0);
    ASSERT_TRUE(x.ok()) << x.status();
    at::Tensor expected = s.sqrt_alpha_bar(t) * mu + s.sigma(t) * z;
    EXPECT_TRUE(at::allclose(*x, expected, 1e-7, 1e-7)) << "t=" << t;
  }
  EXPECT_FALSE(StateAtTimestep(denoiser, *trajectory, 950, at::Tensor(), 1.0).ok());

  for (size_t from : {0, 3, 7}) {
    auto x = DeterministicStateAt(denoiser, *trajectory, from, 137, at::Tensor(), 1.0);
    ASSERT_TRUE(x.ok()) << x.status();
    EXPECT_TRUE(at::allclose(*x, s.sqrt_alpha_bar(137) * mu + s.sigma(137) * z, 1e-7, 1e-7))
        << "from step " << from;
  }
  auto on_grid = DeterministicStateAt(denoiser, *trajectory, 2, 700, at::Tensor(), 1.0);
  ASSERT_TRUE(on_grid.ok());
  EXPECT_TRUE(at::allclose(*on_grid, trajectory->states[2]));
  // From a step below t, or past the trajectory: refused.
  EXPECT_EQ(DeterministicStateAt(denoiser, *trajectory, 9, 137, at::Tensor(), 1.0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DeterministicStateAt(denoiser, *trajectory, 10, 0, at::Tensor(), 1.0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// PeakCentre takes Tweedie steps x ← x + σ²·s(x): for a point mass the
// first lands on the peak's centre √ᾱ·μ from anywhere and the rest stay
// there; for a Gaussian of variance v each moves x the fraction
// f = σ²/(ᾱv + σ²) of the way, so K steps leave (1 − f)^K of the offset.
TEST(SamplerTest, PeakCentreIsTheTweedieStep) {
  const at::Tensor mu = at::tensor({0.7, -0.4, 1.1}, at::kDouble);
  const int64_t t = 20;
  for (double variance : {0.0, 0.3}) {
    ScratchDir dir;
    auto checkpoint = testing::WriteAndLoadMixture(dir.path(), "g", SingleGaussian(mu, variance),
                                                   v1::NoiseSchedule::LINEAR, v1::EPSILON);
    Denoiser denoiser(checkpoint);
    const NoiseSchedule& s = denoiser.schedule();
    const double a = s.alpha_bar(t), var = 1.0 - a;
    const at::Tensor x = at::randn({4, 3}, at::kDouble) + s.sqrt_alpha_bar(t) * mu;
    const at::Tensor peak = s.sqrt_alpha_bar(t) * mu;
    const double kept = 1.0 - var / (a * variance + var);
    for (int steps : {1, 3, kDefaultCentringSteps}) {
      SampleCurvatureOptions options;
      options.centring_steps = steps;
      auto centre = PeakCentre(denoiser, x, t, at::Tensor(), options);
      ASSERT_TRUE(centre.ok()) << centre.status();
      const at::Tensor expected = peak + std::pow(kept, steps) * (x - peak);
      EXPECT_TRUE(at::allclose(*centre, expected, 1e-6, 1e-6))
          << "variance " << variance << ", " << steps << " steps";
    }
  }
}

// States are centred only where the sampler followed another field than the
// measured one: a conditional score measured after guided sampling.
TEST(SamplerTest, OnlyGuidedStatesAreCentred) {
  ScratchDir dir;
  auto conditional = testing::WriteAndLoadMixture(
      dir.path(), "c", testing::PointMassAndBroadClasses(3, 2), v1::NoiseSchedule::LINEAR,
      v1::EPSILON, at::kDouble, /*num_classes=*/2);
  auto unconditional = testing::WriteAndLoadMixture(
      dir.path(), "u", SingleGaussian(at::zeros({3}), 0.0), v1::NoiseSchedule::LINEAR, v1::EPSILON);
  const Denoiser with_classes(conditional), without(unconditional);
  const at::Tensor class_zero = *with_classes.PrepareConditions(at::zeros({2}, at::kLong), 2);
  const at::Tensor null_class = *with_classes.PrepareConditions(at::full({2}, 2, at::kLong), 2);
  const auto centres = [](const Denoiser& denoiser, const at::Tensor& prepared, ScoreKind kind,
                          double guidance, bool enabled = true) {
    SampleCurvatureOptions options;
    options.score_kind = kind;
    options.sampler.guidance = guidance;
    options.centre_guided_states = enabled;
    return CentresGuidedStates(denoiser, options, prepared);
  };
  EXPECT_FALSE(centres(with_classes, class_zero, ScoreKind::kConditional, 1.0));
  EXPECT_TRUE(centres(with_classes, class_zero, ScoreKind::kConditional, 7.5));
  EXPECT_FALSE(centres(with_classes, class_zero, ScoreKind::kConditional, 7.5, /*enabled=*/false));
  EXPECT_TRUE(centres(with_classes, class_zero, ScoreKind::kUnconditional, 3.0));
  EXPECT_FALSE(centres(with_classes, class_zero, ScoreKind::kUnconditional, 0.0));
  EXPECT_FALSE(centres(with_classes, class_zero, ScoreKind::kGuided, 7.5));
  EXPECT_FALSE(centres(with_classes, class_zero, ScoreKind::kDifference, 7.5));
  EXPECT_FALSE(centres(without, at::Tensor(), ScoreKind::kConditional, 7.5));
  // The null class: guided sampling follows ε̂_∅ whatever the weight, the
  // very field measured; centring would only move a state that needs none.
  EXPECT_FALSE(centres(with_classes, null_class, ScoreKind::kConditional, 7.5));
  EXPECT_FALSE(centres(with_classes, null_class, ScoreKind::kUnconditional, 3.0));
}

// Under the null class every guidance weight samples the same trajectory
// (ε̂_∅ + w·0) and the measured field is that same ε̂_∅: the spectra at
// guidance 7.5 are those at guidance 1 (to rounding: guided sampling
// evaluates c and ∅ rows in one call). Centring the states (as for a real
// class) would move them.
TEST(SamplerTest, TheNullClassIsMeasuredAsSampledAtAnyGuidance) {
  ScratchDir dir;
  // Overlapping components, measured where the noise mixes them (t = 400):
  // the null class's Hessian changes from point to point there.
  auto conditional = testing::WriteAndLoadMixture(
      dir.path(), "c", toy::RandomGaussianMixture(3, 4, /*seed=*/5, /*num_classes=*/2),
      v1::NoiseSchedule::LINEAR, v1::EPSILON, at::kDouble, /*num_classes=*/2);
  const Denoiser denoiser(conditional);
  std::vector<std::vector<SampleCurvature>> runs;
  for (double guidance : {1.0, 7.5}) {
    SampleCurvatureOptions options;
    options.sampler.num_steps = 20;
    options.timesteps = {400};
    options.sampler.guidance = guidance;
    auto measured = MeasureSamples(denoiser, {3, 4}, at::full({2}, 2, at::kLong), options, nullptr);
    ASSERT_TRUE(measured.ok()) << measured.status();
    runs.push_back(*std::move(measured));
  }
  for (size_t b = 0; b < 2; ++b) {
    const auto& unguided = runs[0][b].spectra.front().eigenvalues;
    const auto& guided = runs[1][b].spectra.front().eigenvalues;
    ASSERT_EQ(unguided.size(), guided.size());
    for (size_t i = 0; i < guided.size(); ++i) {
      EXPECT_NEAR(guided[i].real(), unguided[i].real(), 1e-9 * std::abs(unguided[i].real()))
          << "sample " << b << ", eigenvalue " << i;
    }
  }
}

TEST(SamplerTest, FirstStepBelowSigma) {
  ScratchDir dir;
  auto checkpoint = testing::WriteAndLoadMixture(
      dir.path(), "m", toy::RandomGaussianMixture(2, 1, 0), v1::NoiseSchedule::LINEAR, v1::EPSILON);
  auto steps = LeadingTimesteps(1000, 50, 0);
  const size_t i = FirstStepBelowSigma(*steps, checkpoint->schedule(), 0.1);
  EXPECT_EQ((*steps)[i], 20);  // σ_20 ≈ 0.079, σ_40 ≈ 0.14
}

TEST(SamplerTest, StopsWhenAsked) {
  ScratchDir dir;
  auto checkpoint = testing::WriteAndLoadMixture(
      dir.path(), "m", toy::RandomGaussianMixture(2, 1, 0), v1::NoiseSchedule::LINEAR, v1::EPSILON);
  Denoiser denoiser(checkpoint);
  int64_t steps_done = 0;
  auto result = SampleTrajectories(
      denoiser, Seeds(2), at::Tensor(), SamplerOptions{},
      [&steps_done] {
        return steps_done >= 5 ? absl::DeadlineExceededError("deadline") : absl::OkStatus();
      },
      [&steps_done](int64_t done, int64_t) { steps_done = done; });
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(steps_done, 5);
}

TEST(SamplerTest, RejectsBadOptions) {
  ScratchDir dir;
  auto checkpoint = testing::WriteAndLoadMixture(
      dir.path(), "m", toy::RandomGaussianMixture(2, 1, 0), v1::NoiseSchedule::LINEAR, v1::EPSILON);
  Denoiser denoiser(checkpoint);
  SamplerOptions options;
  options.eta = 2.0;
  EXPECT_EQ(SampleTrajectories(denoiser, Seeds(1), at::Tensor(), options).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(SampleTrajectories(denoiser, {}, at::Tensor(), SamplerOptions{}).ok());
  EXPECT_FALSE(ParseSamplerKind("euler").ok());
}

// A model that passes the load probe (t = 0 and T − 1) but returns NaN in
// the middle of the schedule: sampling stops there and says where.
TEST(SamplerTest, NonFiniteOutputIsAnErrorNamingModelAndTimestep) {
  testing::ScratchDir dir;
  ASSERT_TRUE(testing::WriteScriptedModel(
                  dir.path(), testing::MixtureConfig("nan_mid", 2),
                  "def forward(self, x: Tensor, t: Tensor) -> Tensor:\n"
                  "    bad = ((t > 400) & (t < 600)).view([-1, 1])\n"
                  "    return torch.where(bad, torch.full_like(x, float('nan')), x * 0.0)\n")
                  .ok());
  auto checkpoint = LoadModel(dir.Join("nan_mid"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  Denoiser denoiser(*checkpoint);
  SamplerOptions options;
  options.num_steps = 10;  // timesteps 900, 800, …, 0: step 5 is t = 500
  auto trajectory = SampleTrajectories(denoiser, {1, 2}, at::Tensor(), options);
  ASSERT_FALSE(trajectory.ok());
  EXPECT_EQ(trajectory.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(trajectory.status().message().find("\"nan_mid\""), std::string::npos);
  EXPECT_NE(trajectory.status().message().find("timestep 500 (sampling step 5 of 10)"),
            std::string::npos)
      << trajectory.status();
}

// Samples without their intermediate states (what Sample needs) are the
// same samples.
TEST(SamplerTest, KeepStatesOffKeepsOnlyTheFinalSample) {
  testing::ScratchDir dir;
  auto checkpoint = testing::WriteAndLoadMixture(
      dir.path(), "g", toy::RandomGaussianMixture(3, 2, 5), v1::NoiseSchedule::LINEAR, v1::EPSILON);
  ASSERT_NE(checkpoint, nullptr);
  Denoiser denoiser(checkpoint);
  SamplerOptions options;
  options.num_steps = 20;
  auto with_states = SampleTrajectories(denoiser, {4, 5}, at::Tensor(), options);
  options.keep_states = false;
  auto without = SampleTrajectories(denoiser, {4, 5}, at::Tensor(), options);
  ASSERT_TRUE(with_states.ok() && without.ok());
  EXPECT_EQ(with_states->states.size(), 20u);
  EXPECT_TRUE(without->states.empty());
  EXPECT_TRUE(at::equal(with_states->final_sample, without->final_sample));
  EXPECT_EQ(StateAtTimestep(denoiser, *without, 500, at::Tensor(), 1.0).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace memaudit
