// The seed's toy experiment, CI-sized: a trained ε-MLP on a Gaussian cloud
// plus one point duplicated 100×. Samples that copy the duplicated point
// must show no positive and no flat directions; the others must have flat
// directions (their κ ≈ 0 along the cloud).
#include <gtest/gtest.h>

#include "core/verdict/verdict.h"
#include "tests/test_util.h"
#include "tools/toy/model_directory.h"
#include "tools/toy/toy_experiment.h"
#include "tools/toy/toy_mlp.h"

namespace memaudit {
namespace {

TEST(ToyExperimentTest, CopiesAreSharpOthersHaveFlatDirections) {
  testing::ScratchDir dir;
  toy::ToyDataOptions data_options;  // 2-D, 400 cloud points + 1 point ×100
  toy::ToyData data = toy::MakeToyData(data_options);
  v1::ModelConfig config = testing::MixtureConfig("toy2d", 2);
  auto schedule = NoiseSchedule::Create(config.noise_schedule());
  torch::jit::Module module = toy::BuildToyMlp(2, toy::MlpOptions{}, 0);
  toy::TrainOptions train;
  train.steps = 5000;
  auto report = toy::TrainEpsilonModel(module, data.points, *schedule, train);
  ASSERT_TRUE(report.ok()) << report.status();
  auto reference = ReferenceSet::FromTensor(data.points);
  ASSERT_TRUE(toy::WriteModelDirectory(dir.path(), config, module, &*reference).ok());

  toy::ToyExperimentOptions options;
  options.samples = 100;
  auto result = toy::RunToyExperiment(dir.Join("toy2d"), options);
  ASSERT_TRUE(result.ok()) << result.status();
  std::cout << toy::FormatToyTable(*result);
  EXPECT_EQ(result->t, 20);  // first of 50 DDIM steps with σ_t < 0.1
  ASSERT_GE(result->copies.count, 5);
  ASSERT_GE(result->others.count, 30);
  EXPECT_EQ(result->copies.max_positive, 0);
  EXPECT_EQ(result->copies.max_flat, 0);
  EXPECT_LT(result->copies.mean_max_kappa, -0.5);
  // Others: flat along the cloud, which is 2-D here.
  EXPECT_EQ(result->others.with_flat_or_positive, result->others.count);
  EXPECT_GT(result->others.mean_flat, 1.5);
  EXPECT_GT(result->others.mean_max_kappa, -0.1);

  // The default verdict, no per-model policy, against truth: every copy of
  // the duplicated point MEMORIZED, no sample that copies nothing MEMORIZED
  // (ratio-test hits on single cloud points, chance in 2-D, are neither).
  for (bool use_reference : {true, false}) {
    SCOPED_TRACE(use_reference ? "with reference" : "without reference");
    const testing::VerdictRates rates = testing::CountVerdicts(
        result->samples, v1::VerdictPolicy(), use_reference ? &*reference : nullptr);
    EXPECT_EQ(rates.flagged_copies, rates.copies);
    EXPECT_EQ(rates.flagged_others, 0);
  }
}

}  // namespace
}  // namespace memaudit
