// Matrix-free (Arnoldi/JVP) spectra against the dense path and the analytic
// oracle.
#include "arnoldi.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>

#include "model_directory.h"
#include "spectrum.h"
#include "test_util.h"
#include "toy_mlp.h"

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
  std::shared_ptr<const Checkpoint> checkpoint;
  std::unique_ptr<Denoiser> denoiser;
  Field field;
  at::Tensor x, rows;
  Spectrum dense;
};

PointSpectrum MakeSetup(std::shared_ptr<const Checkpoint> checkpoint, int64_t t, uint64_t seed) {
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

// A network with a non-symmetric Jacobian (complex eigenvalue pairs): the
// transposed product (the default) and the JVP both give J's eigenvalues.
TEST(ArnoldiTest, AgreesWithDenseOnANetwork) {
  ScratchDir dir;
  torch::jit::Module mlp = toy::BuildToyMlp(256, toy::MlpOptions{}, /*seed=*/3);
  v1::ModelConfig config = testing::MixtureConfig("mlp", 256);
  ASSERT_TRUE(toy::WriteModelDirectory(dir.path(), config, mlp).ok());
  CheckpointOptions options;
  options.dtype = at::kDouble;
  auto checkpoint = Checkpoint::Load(dir.Join("mlp"), options);
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
    at::NoGradGuard no_grad;
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
  auto checkpoint = Checkpoint::Load(dir.Join("trained"));
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
  EXPECT_FALSE(ParseEigenTarget("middle").ok());
}

}  // namespace
}  // namespace memaudit
