// Matrix-free (Arnoldi/JVP) spectra against the dense path and the analytic
// oracle.
#include "core/spectra/arnoldi.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/spectra/spectrum.h"
#include "tests/test_util.h"
#include "tools/toy/model_directory.h"
#include "tools/toy/toy_mlp.h"

namespace memaudit {
namespace {

using testing::ScratchDir;

// Largest distance from each Arnoldi eigenvalue to the nearest dense one,
// relative to the dense spectrum's largest magnitude.
double MatchError(const std::vector<std::complex<double>>& found,
                  const std::vector<std::complex<double>>& all) {
  double scale = 0.0, worst = 0.0;
  for (const auto& v : all) scale = std::max(scale, std::abs(v));
  for (const auto& f : found) {
    double best = 1e300;
    for (const auto& v : all) best = std::min(best, std::abs(f - v));
    worst = std::max(worst, best);
  }
  return worst / scale;
}

struct PointSpectrum {
  std::shared_ptr<const DiffusionNetwork> checkpoint;
  std::unique_ptr<Denoiser> denoiser;
  Field field;
  at::Tensor x, rows;
  Spectrum dense;
};

PointSpectrum MakeSetup(std::shared_ptr<const DiffusionNetwork> checkpoint, int64_t t,
                        uint64_t seed) {
  PointSpectrum s;
  s.checkpoint = std::move(checkpoint);
  s.denoiser = std::make_unique<Denoiser>(s.checkpoint);
  s.field = *s.denoiser->ScoreField(t, ScoreKind::kConditional, at::Tensor());
  at::manual_seed(seed);
  s.x = at::randn(s.checkpoint->BatchShape(1), at::TensorOptions().dtype(s.checkpoint->dtype()));
  s.rows = at::zeros({1}, at::kLong);
  auto jacobian = DenseJacobians(s.field, s.x, s.rows);
  EXPECT_TRUE(jacobian.ok());
  s.dense = DenseSpectra(*jacobian, t, s.denoiser->schedule())->front();
  return s;
}

// An exact point mass: H = −I/(σ² + ᾱ·v) is a multiple of the identity,
// whose one-dimensional Krylov space breaks Arnoldi down. The spectrum must
// still be right: k copies of that eigenvalue, no upward direction.
TEST(ArnoldiTest, ScalarOperatorOfAPointMass) {
  ScratchDir dir;
  toy::GaussianMixture point;
  point.weights = at::ones({1}, at::kDouble);
  point.means = at::zeros({1, 32}, at::kDouble);
  point.covariances = 1e-6 * at::eye(32, at::kDouble).unsqueeze(0);
  auto checkpoint = testing::WriteAndLoadMixture(dir.path(), "point", point,
                                                 v1::NoiseSchedule::LINEAR, v1::EPSILON);
  ASSERT_NE(checkpoint, nullptr);
  const int64_t t = 20;
  PointSpectrum s = MakeSetup(checkpoint, t, /*seed=*/3);
  const NoiseSchedule& schedule = s.denoiser->schedule();
  const double sigma = schedule.sigma(t), alpha_bar = std::pow(schedule.sqrt_alpha_bar(t), 2);
  const double expected = -1.0 / (sigma * sigma + alpha_bar * 1e-6);
  ArnoldiOptions options;
  options.num_eigenvalues = 6;
  auto spectrum = MatrixFreeSpectrum(s.field, s.x, s.rows, t, schedule, options);
  ASSERT_TRUE(spectrum.ok()) << spectrum.status();
  ASSERT_EQ(spectrum->eigenvalues.size(), 6u);
  for (const auto& lambda : spectrum->eigenvalues) {
    EXPECT_NEAR(lambda.real(), expected, 1e-6 * std::abs(expected));
    EXPECT_EQ(lambda.imag(), 0.0);
  }
  EXPECT_EQ(spectrum->summary.positive_count, 0);
  EXPECT_TRUE(spectrum->converged);  // exact: nothing left out
  EXPECT_EQ(spectrum->summary.unconverged, 0);
  EXPECT_NEAR(spectrum->summary.noise_radius, std::sqrt(alpha_bar * 1e-6) / sigma, 1e-6);
  EXPECT_LE(spectrum->matvecs, 4);  // two probes, and two for the scale of n₊
}

TEST(ArnoldiTest, AgreesWithDenseOnAnAnalyticMixtureAtEveryEnd) {
  ScratchDir dir;
  const toy::GaussianMixture mixture = toy::RandomGaussianMixture(64, 3, /*seed=*/21);
  auto checkpoint = testing::WriteAndLoadMixture(dir.path(), "gmm", mixture,
                                                 v1::NoiseSchedule::LINEAR, v1::EPSILON);
  PointSpectrum s = MakeSetup(checkpoint, 50, 1);
  for (EigenTarget target :
       {EigenTarget::kLargestReal, EigenTarget::kLargestMagnitude, EigenTarget::kSmallestReal}) {
    ArnoldiOptions options;
    options.target = target;
    options.num_eigenvalues = 6;
    options.tolerance = 1e-10;
    auto result = ArnoldiEigenvalues(s.field, s.x, s.rows, options);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_TRUE(result->converged);
    ASSERT_EQ(result->eigenvalues.size(), 6u);
    EXPECT_GT(result->matvecs, 6);
    EXPECT_LT(result->matvecs, 64 * 20);
    // The exact Hessian is symmetric: real eigenvalues; compare with the
    // right end of the dense (sorted descending) spectrum.
    std::vector<double> expected;
    const auto& dense = s.dense.eigenvalues;
    if (target == EigenTarget::kLargestReal) {
      for (int i = 0; i < 6; ++i) expected.push_back(dense[i].real());
    } else {
      for (int i = 0; i < 6; ++i) expected.push_back(dense[dense.size() - 6 + i].real());
    }
    const double scale = std::abs(dense.back().real());
    for (int i = 0; i < 6; ++i) {
      EXPECT_NEAR(result->eigenvalues[i].real(), expected[i], 1e-6 * scale)
          << EigenTargetName(target) << " i=" << i;
    }
  }
}

// Stopped before all k converge, the spectrum holds those that did and
// its summary counts the rest, which caps the sample's verdict (verdict.h).
// A subspace barely above k converges slowly on this mixture's clustered
// end: among these budgets some stop with part of the k converged.
TEST(ArnoldiTest, UnconvergedEigenvaluesAreCountedInTheSummary) {
  ScratchDir dir;
  const toy::GaussianMixture mixture = toy::RandomGaussianMixture(64, 3, /*seed=*/21);
  auto checkpoint = testing::WriteAndLoadMixture(dir.path(), "gmm", mixture,
                                                 v1::NoiseSchedule::LINEAR, v1::EPSILON);
  PointSpectrum s = MakeSetup(checkpoint, 50, 1);
  ArnoldiOptions options;
  options.num_eigenvalues = 12;
  options.subspace = 14;
  options.tolerance = 1e-4;
  int partly_converged = 0;
  for (int64_t restarts : {100, 200, 300, 500, 1000}) {
    options.max_restarts = restarts;
    auto spectrum = MatrixFreeSpectrum(s.field, s.x, s.rows, 50, s.denoiser->schedule(), options);
    if (!spectrum.ok() || spectrum->converged) continue;  // none, or all, converged
    ++partly_converged;
    const int64_t found = static_cast<int64_t>(spectrum->eigenvalues.size());
    EXPECT_LT(found, 12) << restarts;
    EXPECT_EQ(spectrum->summary.unconverged, 12 - found) << restarts;
    EXPECT_EQ(spectrum->summary.dimension, found) << restarts;
  }
  EXPECT_GE(partly_converged, 1);
}

// A network with a non-symmetric Jacobian (complex eigenvalue pairs): the
// transposed product (the default) and the JVP both give J's eigenvalues.
TEST(ArnoldiTest, AgreesWithDenseOnANetwork) {
  ScratchDir dir;
  torch::jit::Module mlp = toy::BuildToyMlp(256, toy::MlpOptions{}, /*seed=*/3);
  v1::ModelConfig config = testing::MixtureConfig("mlp", 256);
  ASSERT_TRUE(toy::WriteModelDirectory(dir.path(), config, mlp).ok());
  CheckpointOptions options;
  options.dtype = at::kDouble;
  auto checkpoint = LoadModel(dir.Join("mlp"), options);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  PointSpectrum s = MakeSetup(*checkpoint, 100, 2);
  bool any_complex = false;
  for (const auto& v : s.dense.eigenvalues) any_complex |= v.imag() != 0.0;
  EXPECT_TRUE(any_complex) << "expected a non-symmetric Jacobian";
  for (ArnoldiProduct product : {ArnoldiProduct::kRetainedTranspose, ArnoldiProduct::kJvp}) {
    SCOPED_TRACE(product == ArnoldiProduct::kJvp ? "JVP" : "retained transpose");
    ArnoldiOptions arnoldi;
    arnoldi.product = product;
    arnoldi.target = EigenTarget::kLargestMagnitude;
    arnoldi.num_eigenvalues = 6;
    arnoldi.tolerance = 1e-10;
    auto result = ArnoldiEigenvalues(s.field, s.x, s.rows, arnoldi);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_LE(MatchError(result->eigenvalues, s.dense.eigenvalues), 1e-6);
    arnoldi.target = EigenTarget::kLargestReal;
    auto right = ArnoldiEigenvalues(s.field, s.x, s.rows, arnoldi);
    ASSERT_TRUE(right.ok()) << right.status();
    EXPECT_NEAR(right->eigenvalues[0].real(), s.dense.eigenvalues[0].real(),
                1e-6 * std::abs(s.dense.eigenvalues.back()));
    EXPECT_LE(MatchError(right->eigenvalues, s.dense.eigenvalues), 1e-6);
  }
  // A model with no backward pass (its forward under no_grad) still has
  // JVPs: the default product falls back to them before the first product.
  const Field no_backward = [&s](const at::Tensor& x, const at::Tensor& rows) {
    c10::NoGradGuard no_grad;
    return s.field(x, rows);
  };
  ArnoldiOptions arnoldi;
  arnoldi.num_eigenvalues = 6;
  arnoldi.tolerance = 1e-10;
  auto fallback = ArnoldiEigenvalues(no_backward, s.x, s.rows, arnoldi);
  ASSERT_TRUE(fallback.ok()) << fallback.status();
  EXPECT_LE(MatchError(fallback->eigenvalues, s.dense.eigenvalues), 1e-6);
}

// A trained model (the toy ε-MLP, briefly trained, float32 as served).
TEST(ArnoldiTest, AgreesWithDenseOnATrainedModel) {
  ScratchDir dir;
  toy::ToyDataOptions data_options;
  data_options.dim = 32;
  data_options.intrinsic_dim = 4;
  toy::ToyData data = toy::MakeToyData(data_options);
  v1::ModelConfig config = testing::MixtureConfig("trained", 32);
  auto schedule = NoiseSchedule::Create(config.noise_schedule());
  torch::jit::Module mlp = toy::BuildToyMlp(32, toy::MlpOptions{}, 0);
  toy::TrainOptions train;
  train.steps = 1500;
  ASSERT_TRUE(toy::TrainEpsilonModel(mlp, data.points, *schedule, train).ok());
  ASSERT_TRUE(toy::WriteModelDirectory(dir.path(), config, mlp).ok());
  auto checkpoint = LoadModel(dir.Join("trained"));
  ASSERT_TRUE(checkpoint.ok());
  PointSpectrum s = MakeSetup(*checkpoint, 20, 4);
  ArnoldiOptions arnoldi;
  arnoldi.num_eigenvalues = 8;
  arnoldi.tolerance = 1e-7;
  auto spectrum = MatrixFreeSpectrum(s.field, s.x, s.rows, 20, s.denoiser->schedule(), arnoldi);
  ASSERT_TRUE(spectrum.ok()) << spectrum.status();
  EXPECT_EQ(spectrum->method, SpectrumMethod::kArnoldi);
  EXPECT_TRUE(spectrum->summary.partial);
  // float32 network, float64 Arnoldi: agreement to float32 accuracy.
  EXPECT_LE(MatchError(spectrum->eigenvalues, s.dense.eigenvalues), 1e-4);
  // The largest-real end gives κ_max and hence the width exactly.
  EXPECT_NEAR(spectrum->summary.max_kappa, s.dense.summary.max_kappa,
              1e-4 * std::abs(s.dense.summary.min_kappa));
  // n₊ of the k found counts what the dense summary counts among the same
  // eigenvalues (on this model the 1/σ² fallback scale would count the
  // same; SummaryTest.PartialPositiveCountUsesTheMeasuredScale checks the
  // scale's effect).
  double max_magnitude = 0;
  for (const auto& lambda : s.dense.eigenvalues) {
    max_magnitude = std::max(max_magnitude, std::abs(lambda));
  }
  int64_t expected_positive = 0;
  for (int i = 0; i < 8; ++i) {
    expected_positive += s.dense.eigenvalues[i].real() > 1e-3 * max_magnitude ? 1 : 0;
  }
  EXPECT_EQ(spectrum->summary.positive_count, expected_positive);
}

TEST(ArnoldiTest, FlatCountIsALowerBoundWhenAllFoundAreFlat) {
  ScratchDir dir;
  // A Gaussian with 5 wide directions (flat at small t) and 11 narrow ones.
  toy::GaussianMixture g;
  g.weights = at::ones({1}, at::kDouble);
  g.means = at::zeros({1, 16}, at::kDouble);
  at::Tensor variances = at::full({16}, 1e-4, at::kDouble);
  variances.narrow(0, 0, 5).fill_(1.0);
  g.covariances = at::diag(variances).unsqueeze(0);
  auto checkpoint =
      testing::WriteAndLoadMixture(dir.path(), "g", g, v1::NoiseSchedule::LINEAR, v1::EPSILON);
  PointSpectrum s = MakeSetup(checkpoint, 20, 5);
  ArnoldiOptions arnoldi;
  arnoldi.num_eigenvalues = 3;
  auto few = MatrixFreeSpectrum(s.field, s.x, s.rows, 20, s.denoiser->schedule(), arnoldi);
  ASSERT_TRUE(few.ok()) << few.status();
  EXPECT_EQ(few->summary.flat_count, 3);
  EXPECT_TRUE(few->summary.flat_count_is_lower_bound);
  arnoldi.num_eigenvalues = 8;
  auto enough = MatrixFreeSpectrum(s.field, s.x, s.rows, 20, s.denoiser->schedule(), arnoldi);
  ASSERT_TRUE(enough.ok());
  EXPECT_EQ(enough->summary.flat_count, 5);
  EXPECT_FALSE(enough->summary.flat_count_is_lower_bound);
  EXPECT_EQ(enough->summary.flat_count, s.dense.summary.flat_count);
}

TEST(ArnoldiTest, StopsBetweenMatvecsAndValidates) {
  ScratchDir dir;
  auto checkpoint =
      testing::WriteAndLoadMixture(dir.path(), "m", toy::RandomGaussianMixture(32, 2, 1),
                                   v1::NoiseSchedule::LINEAR, v1::EPSILON);
  Denoiser denoiser(checkpoint);
  Field field = *denoiser.ScoreField(30, ScoreKind::kConditional, at::Tensor());
  at::Tensor x = at::randn({1, 32}, at::kDouble);
  at::Tensor rows = at::zeros({1}, at::kLong);
  int calls = 0;
  auto stopped = ArnoldiEigenvalues(field, x, rows, ArnoldiOptions{}, [&calls] {
    return ++calls > 10 ? absl::CancelledError("stop") : absl::OkStatus();
  });
  EXPECT_EQ(stopped.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(calls, 11);
  ArnoldiOptions too_many;
  too_many.num_eigenvalues = 31;
  EXPECT_EQ(ArnoldiEigenvalues(field, x, rows, too_many).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Points of a non-symmetric network solved in lockstep get each point's own
// spectrum: the same eigenvalues and product counts as solving it alone, and
// one network call per round for all of them.
TEST(ArnoldiTest, LockstepSolvesGiveEachPointItsOwnSpectrum) {
  ScratchDir dir;
  torch::jit::Module mlp = toy::BuildToyMlp(128, toy::MlpOptions{}, /*seed=*/5);
  v1::ModelConfig config = testing::MixtureConfig("mlp", 128);
  ASSERT_TRUE(toy::WriteModelDirectory(dir.path(), config, mlp).ok());
  CheckpointOptions load;
  load.dtype = at::kDouble;
  auto checkpoint = LoadModel(dir.Join("mlp"), load);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  Denoiser denoiser(*checkpoint);
  constexpr int64_t kPoints = 5;
  const Field field = *denoiser.ScoreField(100, ScoreKind::kConditional, at::Tensor());
  at::manual_seed(11);
  // Points at different scales converge after different numbers of
  // products, so solves leave the lockstep at different rounds.
  const at::Tensor x = at::randn({kPoints, 128}, at::kDouble) *
                       at::linspace(3.0, 0.2, kPoints, at::kDouble).unsqueeze(1);
  // Distinct condition rows: the field checks that every row of each batch
  // it gets is the point its condition row names, and counts its calls.
  const at::Tensor rows = at::arange(kPoints, at::kLong);
  std::vector<int64_t> call_rows;
  const Field counted = [&](const at::Tensor& points, const at::Tensor& r) {
    call_rows.push_back(points.size(0));
    if (!points.is_leaf() || points.requires_grad()) {  // a kept forward, not a dual JVP input
      for (int64_t i = 0; i < points.size(0); ++i) {
        EXPECT_TRUE(at::equal(points[i].detach(), x[r[i].item<int64_t>()])) << "row " << i;
      }
    }
    return field(points, at::zeros_like(r));
  };
  for (ArnoldiProduct product : {ArnoldiProduct::kRetainedTranspose, ArnoldiProduct::kJvp}) {
    SCOPED_TRACE(product == ArnoldiProduct::kJvp ? "JVP" : "retained transpose");
    ArnoldiOptions arnoldi;
    arnoldi.product = product;
    arnoldi.num_eigenvalues = 6;
    arnoldi.tolerance = 1e-9;
    call_rows.clear();
    auto together = LockstepArnoldiEigenvalues(counted, x, rows, arnoldi);
    ASSERT_TRUE(together.ok()) << together.status();
    ASSERT_EQ(together->samples.size(), static_cast<size_t>(kPoints));
    // The network saw batched calls: the first of all points, and as many
    // calls as the forward passes counted.
    ASSERT_FALSE(call_rows.empty());
    EXPECT_EQ(call_rows.front(), kPoints);
    EXPECT_EQ(static_cast<int64_t>(call_rows.size()), together->forward_passes);
    int64_t most = 0, fewest = 1 << 30;
    std::vector<int64_t> products;
    for (int64_t b = 0; b < kPoints; ++b) {
      SCOPED_TRACE(absl::StrCat("point ", b));
      auto alone = ArnoldiEigenvalues(field, x.narrow(0, b, 1), rows.narrow(0, b, 1), arnoldi);
      ASSERT_TRUE(alone.ok()) << alone.status();
      const absl::StatusOr<ArnoldiResult>& mine = together->samples[b];
      ASSERT_TRUE(mine.ok()) << mine.status();
      EXPECT_EQ(mine->matvecs, alone->matvecs);
      ASSERT_EQ(mine->eigenvalues.size(), alone->eigenvalues.size());
      for (size_t i = 0; i < alone->eigenvalues.size(); ++i) {
        EXPECT_LE(std::abs(mine->eigenvalues[i] - alone->eigenvalues[i]),
                  1e-9 * std::abs(alone->eigenvalues[0]))
            << "eigenvalue " << i;
      }
      // And against the dense spectrum of the point.
      auto jacobian = DenseJacobians(field, x.narrow(0, b, 1), rows.narrow(0, b, 1));
      ASSERT_TRUE(jacobian.ok());
      const Spectrum dense = DenseSpectra(*jacobian, 100, denoiser.schedule())->front();
      EXPECT_LE(MatchError(mine->eigenvalues, dense.eigenvalues), 1e-6);
      most = std::max(most, mine->matvecs);
      products.push_back(mine->matvecs);
      fewest = std::min(fewest, mine->matvecs);
    }
    // A solve that is not in the last row leaves while later rows still
    // run, so the survivors' rows in the kept forward are not simply its
    // first ones.
    EXPECT_LT(*std::min_element(products.begin(), products.end() - 1), most);
    // One call per round serves every running solve: as many calls as the
    // longest solve has products.
    EXPECT_EQ(together->network_calls, most);
    ASSERT_LT(fewest, most) << "the points should need different numbers of products";
    if (product == ArnoldiProduct::kRetainedTranspose) {
      // The kept forward was rebuilt on the survivors as solves finished.
      EXPECT_GT(together->forward_passes, 1);
      EXPECT_LT(together->forward_passes, most);
    } else {
      EXPECT_EQ(together->forward_passes, most);  // one batched JVP per round
    }
  }
  // A model without a backward pass falls back to batched JVPs.
  const Field no_backward = [&field](const at::Tensor& x, const at::Tensor& rows) {
    c10::NoGradGuard no_grad;
    return field(x, rows);
  };
  ArnoldiOptions arnoldi;
  arnoldi.num_eigenvalues = 6;
  arnoldi.tolerance = 1e-9;
  auto fallback =
      LockstepArnoldiEigenvalues(no_backward, x.narrow(0, 0, 2), rows.narrow(0, 0, 2), arnoldi);
  ASSERT_TRUE(fallback.ok()) << fallback.status();
  for (int64_t b = 0; b < 2; ++b) {
    auto alone = ArnoldiEigenvalues(field, x.narrow(0, b, 1), rows.narrow(0, b, 1), arnoldi);
    ASSERT_TRUE(fallback->samples[b].ok()) << fallback->samples[b].status();
    EXPECT_LE(MatchError(fallback->samples[b]->eigenvalues, alone->eigenvalues), 1e-8);
  }
  // One point alone in lockstep is ArnoldiEigenvalues.
  auto single = LockstepArnoldiEigenvalues(field, x.narrow(0, 2, 1), rows.narrow(0, 2, 1), arnoldi);
  auto plain = ArnoldiEigenvalues(field, x.narrow(0, 2, 1), rows.narrow(0, 2, 1), arnoldi);
  ASSERT_TRUE(single.ok() && plain.ok());
  ASSERT_TRUE(single->samples[0].ok());
  EXPECT_EQ(single->samples[0]->matvecs, plain->matvecs);
  EXPECT_LE(MatchError(single->samples[0]->eigenvalues, plain->eigenvalues), 1e-12);
  // The network failing mid-solve (at the first rebuild of the kept
  // forward, after the first solves have finished) ends every solve.
  int forwards = 0, rounds = 0;
  const Field breaks = [&](const at::Tensor& points, const at::Tensor& r) {
    if (++forwards > 1) throw std::runtime_error("network broke");
    return field(points, r);
  };
  auto broken =
      LockstepArnoldiEigenvalues(breaks, x, at::zeros({kPoints}, at::kLong), arnoldi, [&rounds] {
        ++rounds;
        return absl::OkStatus();
      });
  EXPECT_EQ(broken.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(broken.status().message().find("network broke"), std::string::npos) << broken.status();
  EXPECT_GT(rounds, 6);
  // MatrixFreeSpectra: each point's MatrixFreeSpectrum, summary included.
  auto spectra = MatrixFreeSpectra(field, x, rows, 100, denoiser.schedule(), arnoldi);
  ASSERT_TRUE(spectra.ok()) << spectra.status();
  ASSERT_EQ(spectra->size(), static_cast<size_t>(kPoints));
  for (int64_t b = 0; b < kPoints; ++b) {
    auto alone = MatrixFreeSpectrum(field, x.narrow(0, b, 1), rows.narrow(0, b, 1), 100,
                                    denoiser.schedule(), arnoldi);
    ASSERT_TRUE(alone.ok()) << alone.status();
    const Spectrum& mine = (*spectra)[b];
    EXPECT_EQ(mine.matvecs, alone->matvecs);
    EXPECT_EQ(mine.summary.positive_count, alone->summary.positive_count);
    EXPECT_EQ(mine.summary.flat_count, alone->summary.flat_count);
    EXPECT_NEAR(mine.summary.max_kappa, alone->summary.max_kappa,
                1e-9 * std::abs(alone->summary.min_kappa));
    EXPECT_NEAR(mine.summary.min_kappa, alone->summary.min_kappa,
                1e-9 * std::abs(alone->summary.min_kappa));
  }
}

// A stop or a network failure mid-solve ends every solve of the lockstep
// with that status (no solver is left waiting); bad shapes are refused.
TEST(ArnoldiTest, LockstepStopsAndFailsAsOne) {
  ScratchDir dir;
  auto checkpoint =
      testing::WriteAndLoadMixture(dir.path(), "m", toy::RandomGaussianMixture(32, 2, 1),
                                   v1::NoiseSchedule::LINEAR, v1::EPSILON);
  Denoiser denoiser(checkpoint);
  const Field field = *denoiser.ScoreField(30, ScoreKind::kConditional, at::Tensor());
  const at::Tensor x = at::randn({3, 32}, at::kDouble);
  const at::Tensor rows = at::zeros({3}, at::kLong);
  int rounds = 0;
  auto stopped = LockstepArnoldiEigenvalues(field, x, rows, ArnoldiOptions{}, [&rounds] {
    return ++rounds > 10 ? absl::CancelledError("stop") : absl::OkStatus();
  });
  EXPECT_EQ(stopped.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(rounds, 11);  // checked once per round, not per solve
  auto at_once = LockstepArnoldiEigenvalues(field, x, rows, ArnoldiOptions{},
                                            [] { return absl::CancelledError("stop"); });
  EXPECT_EQ(at_once.status().code(), absl::StatusCode::kCancelled);
  int calls = 0;
  const Field failing = [&](const at::Tensor& points, const at::Tensor& r) {
    // The first round's batched JVP works; the next throws, as a network
    // failing mid-solve would.
    if (++calls > 1) throw std::runtime_error("network broke");
    return field(points, r);
  };
  ArnoldiOptions jvp;
  jvp.product = ArnoldiProduct::kJvp;
  rounds = 0;
  auto failed = LockstepArnoldiEigenvalues(failing, x, rows, jvp, [&rounds] {
    ++rounds;
    return absl::OkStatus();
  });
  EXPECT_EQ(rounds, 2);  // the first round's JVP was one call, the second failed
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(failed.status().message().find("network broke"), std::string::npos) << failed.status();
  EXPECT_EQ(
      LockstepArnoldiEigenvalues(field, x, rows.narrow(0, 0, 2), ArnoldiOptions{}).status().code(),
      absl::StatusCode::kInvalidArgument);
  ArnoldiOptions too_many;
  too_many.num_eigenvalues = 31;
  EXPECT_EQ(LockstepArnoldiEigenvalues(field, x, rows, too_many).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace memaudit
