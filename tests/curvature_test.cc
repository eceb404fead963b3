// The analytic oracle: exact Gaussian-mixture models (tools/toy) whose true
// Hessian of log p_t is known in closed form (mixture_oracle.h). The engine's
// Jacobians and eigenvalues must match it for every schedule, prediction type
// and score kind, at several t and dimensions.
#include "core/spectra/curvature.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <Eigen/Eigenvalues>
#include <algorithm>

#include "core/model/denoiser.h"
#include "core/spectra/spectrum.h"
#include "tests/mixture_oracle.h"
#include "tests/test_util.h"
#include "tools/toy/model_directory.h"
#include "tools/toy/toy_mlp.h"

namespace memaudit {
namespace {

using testing::ScratchDir;

Eigen::VectorXd ToEigen(const at::Tensor& row) {
  at::Tensor flat = row.to(at::kDouble).contiguous().view(-1);
  return Eigen::Map<const Eigen::VectorXd>(flat.data_ptr<double>(), flat.numel());
}

Eigen::MatrixXd ToEigenMatrix(const at::Tensor& matrix) {
  at::Tensor m = matrix.to(at::kDouble).contiguous();
  return Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
      m.data_ptr<double>(), m.size(0), m.size(1));
}

// Points where the density has mass at timestep t: noised component samples.
at::Tensor NoisedMixturePoints(const toy::GaussianMixture& mixture, double alpha_bar, int64_t count,
                               uint64_t seed) {
  at::manual_seed(seed);
  std::vector<at::Tensor> points;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t k = i % mixture.size();
    at::Tensor chol =
        at::linalg_cholesky(mixture.covariances[k] + 1e-9 * at::eye(mixture.dim(), at::kDouble));
    at::Tensor x0 = mixture.means[k] + at::matmul(chol, at::randn({mixture.dim()}, at::kDouble));
    points.push_back(std::sqrt(alpha_bar) * x0 +
                     std::sqrt(1.0 - alpha_bar) * at::randn({mixture.dim()}, at::kDouble));
  }
  return at::stack(points);
}

// Relative error of sorted spectra: max |λ_i − λ*_i| / max |λ*|.
double SpectrumError(const Spectrum& spectrum, const Eigen::MatrixXd& exact_hessian) {
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(exact_hessian);
  std::vector<double> exact(solver.eigenvalues().data(),
                            solver.eigenvalues().data() + solver.eigenvalues().size());
  std::sort(exact.rbegin(), exact.rend());
  double scale = 0.0, error = 0.0;
  for (size_t i = 0; i < exact.size(); ++i) {
    scale = std::max(scale, std::abs(exact[i]));
    error = std::max(error, std::abs(spectrum.eigenvalues[i] - std::complex<double>(exact[i], 0)));
  }
  return error / scale;
}

struct OracleCase {
  int64_t dim;
  v1::NoiseSchedule::Kind schedule;
  v1::PredictionType prediction;
};

std::string CaseName(const ::testing::TestParamInfo<OracleCase>& info) {
  return "d" + std::to_string(info.param.dim) + "_" +
         v1::NoiseSchedule::Kind_Name(info.param.schedule) + "_" +
         v1::PredictionType_Name(info.param.prediction);
}

class MixtureOracleTest : public ::testing::TestWithParam<OracleCase> {};

// float64 end to end: Jacobian entries and eigenvalues within 1e-4 relative
// (in practice ~1e-10).
TEST_P(MixtureOracleTest, DenseSpectrumMatchesClosedFormInFloat64) {
  const OracleCase& c = GetParam();
  ScratchDir dir;
  const toy::GaussianMixture mixture = toy::RandomGaussianMixture(c.dim, 3, /*seed=*/c.dim);
  auto checkpoint = testing::WriteAndLoadMixture(dir.path(), "gmm", mixture, c.schedule,
                                                 c.prediction, at::kDouble);
  ASSERT_NE(checkpoint, nullptr);
  Denoiser denoiser(checkpoint);
  for (int64_t t : {5, 100, 600}) {
    const double alpha_bar = denoiser.schedule().alpha_bar(t);
    at::Tensor x = NoisedMixturePoints(mixture, alpha_bar, 3, /*seed=*/t);
    at::Tensor rows = at::arange(3, at::kLong);
    auto field = denoiser.ScoreField(t, ScoreKind::kConditional, at::Tensor());
    ASSERT_TRUE(field.ok()) << field.status();
    JacobianOptions options;
    options.chunk_rows = 40;  // several chunks, spanning samples
    auto jacobians = DenseJacobians(*field, x, rows, options);
    ASSERT_TRUE(jacobians.ok()) << jacobians.status();
    auto spectra = DenseSpectra(*jacobians, t, denoiser.schedule());
    ASSERT_TRUE(spectra.ok()) << spectra.status();
    for (int64_t b = 0; b < 3; ++b) {
      testing::MixtureDerivatives exact =
          testing::ExactMixtureDerivatives(mixture, alpha_bar, ToEigen(x[b]));
      const Eigen::MatrixXd engine = ToEigenMatrix((*jacobians)[b]);
      const double scale = exact.hessian.cwiseAbs().maxCoeff();
      EXPECT_LE((engine - exact.hessian).cwiseAbs().maxCoeff() / scale, 1e-8)
          << "t=" << t << " b=" << b;
      EXPECT_LE(SpectrumError((*spectra)[b], exact.hessian), 1e-4) << "t=" << t << " b=" << b;
      // The score itself (through the prediction-type conversion).
      at::Tensor score = (*field)(x.narrow(0, b, 1), rows.narrow(0, b, 1));
      EXPECT_LE((ToEigen(score) - exact.score).cwiseAbs().maxCoeff() /
                    (1.0 + exact.score.cwiseAbs().maxCoeff()),
                1e-8);
    }
  }
}

std::vector<OracleCase> AllCases() {
  std::vector<OracleCase> cases;
  for (int64_t dim : {2, 16, 64}) {
    for (auto schedule :
         {v1::NoiseSchedule::LINEAR, v1::NoiseSchedule::SCALED_LINEAR, v1::NoiseSchedule::COSINE}) {
      for (auto prediction : {v1::EPSILON, v1::V_PREDICTION, v1::SAMPLE, v1::SCORE}) {
        cases.push_back({dim, schedule, prediction});
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllSchedulesAndPredictions, MixtureOracleTest,
                         ::testing::ValuesIn(AllCases()), CaseName);

// The checkpoint contract's float32: eigenvalues within 2e-3 of max|λ|.
TEST(MixtureOracleFloat32Test, SpectrumWithinStatedBound) {
  for (int64_t dim : {2, 16, 64}) {
    ScratchDir dir;
    const toy::GaussianMixture mixture = toy::RandomGaussianMixture(dim, 3, /*seed=*/dim + 7);
    auto checkpoint = testing::WriteAndLoadMixture(
        dir.path(), "gmm32", mixture, v1::NoiseSchedule::LINEAR, v1::EPSILON, at::kFloat);
    ASSERT_NE(checkpoint, nullptr);
    Denoiser denoiser(checkpoint);
    for (int64_t t : {5, 20, 300}) {
      const double alpha_bar = denoiser.schedule().alpha_bar(t);
      at::Tensor x = NoisedMixturePoints(mixture, alpha_bar, 2, t).to(at::kFloat);
      auto field = denoiser.ScoreField(t, ScoreKind::kConditional, at::Tensor());
      ASSERT_TRUE(field.ok());
      auto jacobians = DenseJacobians(*field, x, at::arange(2, at::kLong));
      ASSERT_TRUE(jacobians.ok()) << jacobians.status();
      auto spectra = DenseSpectra(*jacobians, t, denoiser.schedule());
      ASSERT_TRUE(spectra.ok());
      for (int64_t b = 0; b < 2; ++b) {
        auto exact = testing::ExactMixtureDerivatives(mixture, alpha_bar, ToEigen(x[b]));
        EXPECT_LE(SpectrumError((*spectra)[b], exact.hessian), 2e-3) << "d=" << dim << " t=" << t;
      }
    }
  }
}

// Score kinds on a class-conditional mixture: the condition selects the
// class's components; the null class is the whole mixture.
TEST(ScoreKindOracleTest, ConditionalUnconditionalGuidedDifference) {
  ScratchDir dir;
  const int64_t dim = 6, classes = 2;
  const toy::GaussianMixture mixture = toy::RandomGaussianMixture(dim, 4, /*seed=*/3, classes);
  auto checkpoint =
      testing::WriteAndLoadMixture(dir.path(), "cond", mixture, v1::NoiseSchedule::SCALED_LINEAR,
                                   v1::EPSILON, at::kDouble, classes);
  ASSERT_NE(checkpoint, nullptr);
  Denoiser denoiser(checkpoint);
  const int64_t t = 50;
  const double alpha_bar = denoiser.schedule().alpha_bar(t);
  const double w = 3.0;
  at::Tensor x = NoisedMixturePoints(mixture, alpha_bar, 4, 11);
  auto labels = denoiser.PrepareConditions(at::tensor({0, 1, 0, 1}, at::kLong), 4);
  ASSERT_TRUE(labels.ok());
  at::Tensor rows = at::arange(4, at::kLong);
  for (ScoreKind kind : {ScoreKind::kConditional, ScoreKind::kUnconditional, ScoreKind::kGuided,
                         ScoreKind::kDifference}) {
    auto field = denoiser.ScoreField(t, kind, *labels, w);
    ASSERT_TRUE(field.ok()) << field.status();
    auto jacobians = DenseJacobians(*field, x, rows);
    ASSERT_TRUE(jacobians.ok());
    for (int64_t b = 0; b < 4; ++b) {
      const int64_t label = b % 2;
      std::vector<bool> in_class(mixture.size());
      for (int64_t k = 0; k < mixture.size(); ++k) {
        in_class[k] = mixture.classes[k].item<int64_t>() == label;
      }
      const Eigen::MatrixXd conditional =
          testing::ExactMixtureDerivatives(mixture, alpha_bar, ToEigen(x[b]), in_class).hessian;
      const Eigen::MatrixXd unconditional =
          testing::ExactMixtureDerivatives(mixture, alpha_bar, ToEigen(x[b])).hessian;
      Eigen::MatrixXd expected;
      switch (kind) {
        case ScoreKind::kConditional:
          expected = conditional;
          break;
        case ScoreKind::kUnconditional:
          expected = unconditional;
          break;
        case ScoreKind::kGuided:
          expected = unconditional + w * (conditional - unconditional);
          break;
        case ScoreKind::kDifference:
          expected = conditional - unconditional;
          break;
      }
      const double scale = std::max(1.0, expected.cwiseAbs().maxCoeff());
      EXPECT_LE((ToEigenMatrix((*jacobians)[b]) - expected).cwiseAbs().maxCoeff() / scale, 1e-8)
          << ScoreKindName(kind) << " b=" << b;
    }
  }
}

// JVP (both modes) and VJP agree with the dense Jacobian.
TEST(ProductsTest, JvpAndVjpMatchDenseJacobian) {
  ScratchDir dir;
  const toy::GaussianMixture mixture = toy::RandomGaussianMixture(16, 3, /*seed=*/5);
  auto checkpoint = testing::WriteAndLoadMixture(dir.path(), "prod", mixture,
                                                 v1::NoiseSchedule::COSINE, v1::V_PREDICTION);
  ASSERT_NE(checkpoint, nullptr);
  Denoiser denoiser(checkpoint);
  const int64_t t = 40;
  at::Tensor x = NoisedMixturePoints(mixture, denoiser.schedule().alpha_bar(t), 3, 2);
  at::Tensor rows = at::arange(3, at::kLong);
  auto field = denoiser.ScoreField(t, ScoreKind::kConditional, at::Tensor());
  ASSERT_TRUE(field.ok());
  auto jacobians = DenseJacobians(*field, x, rows);
  ASSERT_TRUE(jacobians.ok());
  at::Tensor v = at::randn({3, 16}, at::kDouble);
  at::Tensor expected_jv = at::bmm(*jacobians, v.unsqueeze(2)).squeeze(2);
  at::Tensor expected_vj = at::bmm(jacobians->transpose(1, 2), v.unsqueeze(2)).squeeze(2);
  for (JvpMode mode : {JvpMode::kAuto, JvpMode::kForward, JvpMode::kDoubleBackward}) {
    JvpMode used = JvpMode::kAuto;
    auto jv = Jvp(*field, x, rows, v, mode, &used);
    ASSERT_TRUE(jv.ok()) << jv.status();
    EXPECT_TRUE(at::allclose(*jv, expected_jv, 1e-9, 1e-9)) << static_cast<int>(mode);
    EXPECT_EQ(used, mode == JvpMode::kAuto ? JvpMode::kForward : mode);
  }
  auto vj = Vjp(*field, x, rows, v);
  ASSERT_TRUE(vj.ok());
  EXPECT_TRUE(at::allclose(*vj, expected_vj, 1e-9, 1e-9));
  // Wrong-shaped v is rejected, not broadcast.
  EXPECT_EQ(Jvp(*field, x, rows, v.narrow(1, 0, 8)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The retained-graph VJP is Jᵀv per sample, again and again over one forward
// pass (the graph survives each product), on a network whose Jacobian is not
// symmetric (so Jᵀv and Jv differ and a missing transpose would show), and
// refuses a wrong shape.
TEST(ProductsTest, RetainedVjpIsTheTransposedJacobianEachTime) {
  ScratchDir dir;
  const int64_t d = 16;
  torch::jit::Module mlp = toy::BuildToyMlp(d, toy::MlpOptions{}, /*seed=*/5);
  ASSERT_TRUE(toy::WriteModelDirectory(dir.path(), testing::MixtureConfig("mlp", d), mlp).ok());
  CheckpointOptions options;
  options.dtype = at::kDouble;
  auto checkpoint = LoadModel(dir.Join("mlp"), options);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  Denoiser denoiser(*checkpoint);
  at::manual_seed(4);
  at::Tensor x = at::randn({3, d}, at::kDouble);
  at::Tensor rows = at::arange(3, at::kLong);
  auto field = denoiser.ScoreField(25, ScoreKind::kConditional, at::Tensor());
  ASSERT_TRUE(field.ok());
  auto jacobians = DenseJacobians(*field, x, rows);
  ASSERT_TRUE(jacobians.ok());
  auto transpose = RetainedVjp::Create(*field, x, rows);
  ASSERT_TRUE(transpose.ok()) << transpose.status();
  for (int repeat = 0; repeat < 3; ++repeat) {
    at::Tensor v = at::randn({3, d}, at::kDouble);
    at::Tensor expected = at::bmm(jacobians->transpose(1, 2), v.unsqueeze(2)).squeeze(2);
    at::Tensor untransposed = at::bmm(*jacobians, v.unsqueeze(2)).squeeze(2);
    ASSERT_FALSE(at::allclose(expected, untransposed, 1e-6, 1e-6)) << "J is symmetric here";
    auto product = transpose->Apply(v);
    ASSERT_TRUE(product.ok()) << product.status();
    EXPECT_TRUE(at::allclose(*product, expected, 1e-9, 1e-9)) << "product " << repeat;
  }
  EXPECT_EQ(transpose->Apply(at::randn({3, 8}, at::kDouble)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ProductsTest, CancelledBetweenChunks) {
  ScratchDir dir;
  const toy::GaussianMixture mixture = toy::RandomGaussianMixture(16, 2, /*seed=*/9);
  auto checkpoint = testing::WriteAndLoadMixture(dir.path(), "stop", mixture,
                                                 v1::NoiseSchedule::LINEAR, v1::EPSILON);
  Denoiser denoiser(checkpoint);
  auto field = denoiser.ScoreField(10, ScoreKind::kConditional, at::Tensor());
  ASSERT_TRUE(field.ok());
  int calls = 0;
  JacobianOptions options;
  options.chunk_rows = 4;
  auto result = DenseJacobians(
      *field, at::randn({2, 16}, at::kDouble), at::arange(2, at::kLong), options,
      [&calls] { return ++calls > 3 ? absl::CancelledError("stop") : absl::OkStatus(); });
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(calls, 4);  // stopped at the 4th chunk of 8
}

// Summary statistics against hand-computed values.
TEST(SummaryTest, CountsAndWidth) {
  const double sigma = 0.1, sqrt_alpha_bar = 0.9;
  // κ = σ²·λ: {0.02, 0, −0.3, −0.6, −1.0} from λ = {2, 0, −30, −60, −100}.
  std::vector<std::complex<double>> eigenvalues = {{2, 0}, {0, 0}, {-30, 1}, {-30, -1}, {-100, 0}};
  SpectrumSummary s = Summarize(eigenvalues, sigma, sqrt_alpha_bar);
  EXPECT_EQ(s.dimension, 5);
  EXPECT_EQ(s.positive_count, 1);  // 2 > 1e-3·100; 0 is not positive
  EXPECT_EQ(s.flat_count, 4);      // κ > −½: 0.02, 0, −0.3, −0.3
  EXPECT_DOUBLE_EQ(s.max_kappa, 0.02);
  EXPECT_DOUBLE_EQ(s.min_kappa, -1.0);
  EXPECT_NEAR(s.mean_kappa, (0.02 + 0 - 0.3 - 0.3 - 1.0) / 5, 1e-15);
  EXPECT_TRUE(std::isinf(s.width));
  // All negative: w = (σ/√ᾱ)·√(−1/κ_max − 1).
  SpectrumSummary peak = Summarize({{-20, 0}, {-90, 0}}, sigma, sqrt_alpha_bar);
  EXPECT_EQ(peak.positive_count, 0);
  EXPECT_EQ(peak.flat_count, 1);
  EXPECT_NEAR(peak.width, (0.1 / 0.9) * std::sqrt(1.0 / 0.2 - 1.0), 1e-12);
}

// n₊ of a partial spectrum: its scale max|λ| is the whole matrix's when the
// caller measured it, else at least 1/σ² (here 100).
TEST(SummaryTest, PartialPositiveCountUsesTheMeasuredScale) {
  const double sigma = 0.1, sqrt_alpha_bar = 0.9;
  const std::vector<std::complex<double>> top = {{0.5, 0}, {-30, 0}};  // 0.5 > 1e-3·100
  EXPECT_EQ(Summarize(top, sigma, sqrt_alpha_bar, {}, /*partial=*/true, 10).positive_count, 1);
  // A steeper matrix (max|λ| = 1000): 0.5 is below 1e-3·1000, as the dense
  // summary of that matrix would count it.
  EXPECT_EQ(Summarize(top, sigma, sqrt_alpha_bar, {}, /*partial=*/true, 10, 1000.0).positive_count,
            0);
  // A flatter one (max|λ| = 40): the largest found still counts.
  EXPECT_EQ(Summarize(top, sigma, sqrt_alpha_bar, {}, /*partial=*/true, 10, 40.0).positive_count,
            1);
}

// Exact for a Gaussian: w recovers the data's standard deviation.
TEST(SummaryTest, WidthRecoversGaussianStandardDeviation) {
  ScratchDir dir;
  toy::GaussianMixture single;
  single.weights = at::ones({1}, at::kDouble);
  single.means = at::zeros({1, 3}, at::kDouble);
  single.covariances = at::diag(at::tensor({0.04, 0.09, 0.25}, at::kDouble)).unsqueeze(0);
  auto checkpoint = testing::WriteAndLoadMixture(dir.path(), "gauss", single,
                                                 v1::NoiseSchedule::LINEAR, v1::EPSILON);
  Denoiser denoiser(checkpoint);
  const int64_t t = 30;
  auto field = denoiser.ScoreField(t, ScoreKind::kConditional, at::Tensor());
  auto jacobians =
      DenseJacobians(*field, at::randn({1, 3}, at::kDouble), at::zeros({1}, at::kLong));
  ASSERT_TRUE(jacobians.ok());
  auto spectra = DenseSpectra(*jacobians, t, denoiser.schedule());
  ASSERT_TRUE(spectra.ok());
  EXPECT_NEAR((*spectra)[0].summary.width, 0.5, 1e-9);  // the widest direction, √0.25
}

TEST(SpectrumTest, SymmetrizedOnlyOnRequest) {
  at::Tensor rotation = at::tensor({0.0, -1.0, 1.0, 0.0}, at::kDouble).view({1, 2, 2});
  auto schedule = NoiseSchedule::Create(testing::MixtureConfig("x", 2).noise_schedule());
  auto general = DenseSpectra(rotation, 10, *schedule);
  ASSERT_TRUE(general.ok());
  EXPECT_FALSE((*general)[0].symmetrized);
  EXPECT_NEAR(std::abs((*general)[0].eigenvalues[0].imag()), 1.0, 1e-12);  // ±i
  SpectrumOptions options;
  options.symmetrize = true;
  auto symmetric = DenseSpectra(rotation, 10, *schedule, options);
  ASSERT_TRUE(symmetric.ok());
  EXPECT_TRUE((*symmetric)[0].symmetrized);
  EXPECT_NEAR(std::abs((*symmetric)[0].eigenvalues[0]), 0.0, 1e-12);  // (A + Aᵀ)/2 = 0
}

}  // namespace
}  // namespace memaudit
