#include "core/model/denoiser.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <limits>

#include "core/runtime/tensor_file.h"
#include "tests/test_util.h"
#include "tools/toy/model_directory.h"

namespace memaudit {
namespace {

using testing::ScratchDir;

// The four prediction types encode the same exact ε̂ differently; the
// denoiser must recover identical ε̂ from each (conversion tested against
// the formulas of docs/DESIGN.md §2 written out here independently).
TEST(DenoiserTest, PredictionTypesRecoverTheSameEpsilon) {
  ScratchDir dir;
  const toy::GaussianMixture mixture = toy::RandomGaussianMixture(5, 3, /*seed=*/4);
  at::Tensor x = at::randn({6, 5}, at::kDouble);
  at::Tensor t = at::tensor({0, 3, 50, 200, 700, 990}, at::kLong);
  at::Tensor reference;
  for (auto prediction : {v1::EPSILON, v1::V_PREDICTION, v1::SAMPLE, v1::SCORE}) {
    auto checkpoint = testing::WriteAndLoadMixture(dir.path(), "m" + std::to_string(prediction),
                                                   mixture, v1::NoiseSchedule::LINEAR, prediction);
    ASSERT_NE(checkpoint, nullptr);
    Denoiser denoiser(checkpoint);
    at::Tensor epsilon = denoiser.Epsilon(x, t, at::Tensor());
    if (!reference.defined()) {
      reference = epsilon;
      continue;
    }
    EXPECT_TRUE(at::allclose(epsilon, reference, 1e-9, 1e-9))
        << v1::PredictionType_Name(prediction);
  }
}

TEST(DenoiserTest, EpsilonFromOutputFormulas) {
  ScratchDir dir;
  const toy::GaussianMixture mixture = toy::RandomGaussianMixture(3, 1, /*seed=*/2);
  at::Tensor x = at::randn({2, 3}, at::kDouble);
  at::Tensor out = at::randn({2, 3}, at::kDouble);
  at::Tensor t = at::tensor({10, 400}, at::kLong);
  for (auto prediction : {v1::EPSILON, v1::V_PREDICTION, v1::SAMPLE, v1::SCORE}) {
    auto checkpoint = testing::WriteAndLoadMixture(dir.path(), "f" + std::to_string(prediction),
                                                   mixture, v1::NoiseSchedule::COSINE, prediction);
    Denoiser denoiser(checkpoint);
    at::Tensor got = denoiser.EpsilonFromOutput(out, x, t);
    for (int64_t b = 0; b < 2; ++b) {
      const double a = denoiser.schedule().sqrt_alpha_bar(t[b].item<int64_t>());
      const double s = denoiser.schedule().sigma(t[b].item<int64_t>());
      at::Tensor expected;
      switch (prediction) {
        case v1::EPSILON:
          expected = out[b];
          break;
        case v1::V_PREDICTION:
          expected = a * out[b] + s * x[b];
          break;
        case v1::SAMPLE:
          expected = (x[b] - a * out[b]) / s;
          break;
        default:
          expected = -s * out[b];
          break;
      }
      EXPECT_TRUE(at::allclose(got[b], expected, 1e-12, 1e-12)) << prediction;
    }
  }
}

TEST(DenoiserTest, GuidanceCombinesConditionalAndNull) {
  ScratchDir dir;
  const toy::GaussianMixture mixture = toy::RandomGaussianMixture(4, 4, /*seed=*/8, 2);
  auto checkpoint = testing::WriteAndLoadMixture(
      dir.path(), "cfg", mixture, v1::NoiseSchedule::LINEAR, v1::EPSILON, at::kDouble, 2);
  Denoiser denoiser(checkpoint);
  at::Tensor x = at::randn({3, 4}, at::kDouble);
  at::Tensor t = at::full({3}, 100, at::kLong);
  at::Tensor labels = at::tensor({0, 1, 1}, at::kLong);
  at::Tensor conditional = denoiser.Epsilon(x, t, labels);
  at::Tensor unconditional = denoiser.Epsilon(x, t, at::full({3}, 2, at::kLong));
  EXPECT_FALSE(at::allclose(conditional, unconditional));
  for (double w : {0.0, 1.0, 5.0}) {
    at::Tensor guided = denoiser.GuidedEpsilon(x, t, labels, w);
    EXPECT_TRUE(
        at::allclose(guided, unconditional + w * (conditional - unconditional), 1e-10, 1e-10))
        << "w=" << w;
  }
}

TEST(DenoiserTest, InvalidRequestsNameTheField) {
  ScratchDir dir;
  const toy::GaussianMixture mixture = toy::RandomGaussianMixture(2, 2, /*seed=*/1);
  auto unconditional = testing::WriteAndLoadMixture(dir.path(), "u", mixture,
                                                    v1::NoiseSchedule::LINEAR, v1::EPSILON);
  Denoiser denoiser(unconditional);
  auto guided = denoiser.ScoreField(10, ScoreKind::kGuided, at::Tensor(), 2.0);
  EXPECT_EQ(guided.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(guided.status().message().find("score_kind"), std::string::npos);
  auto late = denoiser.ScoreField(1000, ScoreKind::kConditional, at::Tensor());
  EXPECT_NE(late.status().message().find("t:"), std::string::npos);
  auto with_condition = denoiser.PrepareConditions(at::tensor({1}, at::kLong), 1);
  EXPECT_EQ(with_condition.status().code(), absl::StatusCode::kInvalidArgument);

  const toy::GaussianMixture classes = toy::RandomGaussianMixture(2, 2, /*seed=*/1, 2);
  auto conditional = testing::WriteAndLoadMixture(
      dir.path(), "c", classes, v1::NoiseSchedule::LINEAR, v1::EPSILON, at::kDouble, 2);
  Denoiser class_denoiser(conditional);
  auto out_of_range = class_denoiser.PrepareConditions(at::tensor({0, 3}, at::kLong), 2);
  EXPECT_EQ(out_of_range.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(out_of_range.status().message().find("condition"), std::string::npos);
  auto wrong_count = class_denoiser.PrepareConditions(at::tensor({0}, at::kLong), 2);
  EXPECT_EQ(wrong_count.status().code(), absl::StatusCode::kInvalidArgument);
  // Null class (== num_classes) is allowed.
  EXPECT_TRUE(class_denoiser.PrepareConditions(at::tensor({2, 1}, at::kLong), 2).ok());
}

// The embedding-conditioned exact model with one-hot embeddings equals the
// class-label model, and its stored null embedding equals the null class.
TEST(DenoiserTest, EmbeddingConditionsMatchClassLabels) {
  ScratchDir dir;
  const int64_t classes = 3;
  const toy::GaussianMixture mixture = toy::RandomGaussianMixture(5, 6, /*seed=*/2, classes);
  auto labelled = testing::WriteAndLoadMixture(
      dir.path(), "labels", mixture, v1::NoiseSchedule::LINEAR, v1::EPSILON, at::kDouble, classes);
  v1::ModelConfig config = testing::MixtureConfig("embedded", 5);
  config.mutable_conditioning()->set_kind(v1::Conditioning::EMBEDDING);
  config.mutable_conditioning()->add_embedding_shape(classes);
  auto schedule = NoiseSchedule::Create(config.noise_schedule());
  auto module = toy::BuildGaussianMixtureModule(mixture, *schedule, v1::EPSILON, classes,
                                                toy::MixtureConditioning::kEmbedding);
  ASSERT_TRUE(module.ok()) << module.status();
  ASSERT_TRUE(toy::WriteModelDirectory(dir.path(), config, *module).ok());
  CheckpointOptions options;
  options.dtype = at::kDouble;
  // Without null_condition.pt, kinds that need ∅ are refused clearly.
  auto without_null = LoadModel(dir.Join("embedded"), options);
  ASSERT_TRUE(without_null.ok()) << without_null.status();
  Denoiser bare(*without_null);
  EXPECT_EQ(bare.PrepareConditions(at::Tensor(), 1).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(
      SaveTensorFile(dir.Join("embedded/null_condition.pt"), at::zeros({classes}, at::kFloat))
          .ok());
  auto embedded = LoadModel(dir.Join("embedded"), options);
  ASSERT_TRUE(embedded.ok()) << embedded.status();
  Denoiser by_label(labelled), by_embedding(*embedded);
  at::Tensor x = at::randn({3, 5}, at::kDouble);
  at::Tensor t = at::full({3}, 40, at::kLong);
  at::Tensor labels = at::tensor({0, 2, 1}, at::kLong);
  auto one_hot = by_embedding.PrepareConditions(at::one_hot(labels, classes).to(at::kFloat), 3);
  ASSERT_TRUE(one_hot.ok()) << one_hot.status();
  EXPECT_TRUE(at::allclose(by_embedding.Epsilon(x, t, *one_hot), by_label.Epsilon(x, t, labels),
                           1e-12, 1e-12));
  auto null_embedding = by_embedding.PrepareConditions(at::Tensor(), 3);
  ASSERT_TRUE(null_embedding.ok());
  EXPECT_TRUE(at::allclose(by_embedding.Epsilon(x, t, *null_embedding),
                           by_label.Epsilon(x, t, at::full({3}, classes, at::kLong)), 1e-12,
                           1e-12));
  // Guided and difference fields work through the stored null embedding.
  EXPECT_TRUE(by_embedding.ScoreField(40, ScoreKind::kDifference, *one_hot).ok());
  auto wrong_shape = by_embedding.PrepareConditions(at::zeros({3, classes + 1}), 3);
  EXPECT_EQ(wrong_shape.status().code(), absl::StatusCode::kInvalidArgument);
  // A null condition that is not finite fails the load naming the file,
  // not the network at the first guided step.
  at::Tensor bad = at::zeros({classes}, at::kFloat);
  bad[1] = std::numeric_limits<float>::quiet_NaN();
  ASSERT_TRUE(SaveTensorFile(dir.Join("embedded/null_condition.pt"), bad).ok());
  auto not_finite = LoadModel(dir.Join("embedded"), options);
  ASSERT_FALSE(not_finite.ok());
  EXPECT_NE(not_finite.status().message().find(
                "null_condition.pt: must hold finite floating-point values"),
            std::string::npos)
      << not_finite.status();
}

}  // namespace
}  // namespace memaudit
