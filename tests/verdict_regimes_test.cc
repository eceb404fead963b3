// The default verdict against nearest-neighbour truth, one CI-sized check
// per regime of the verdict zoo (docs/VERDICTS.md): an exact mixture saved
// from Python in float64, and the committed MNIST U-Net. (The trained
// low-dimensional MLP is checked in toy_experiment_test.) No threshold was
// read from these seeds: the default thresholds are derived, not fitted
// (docs/VERDICTS.md), and the zoo runs use seeds from 1000.
//
// Truth: d₁/d₂ < 1/3 to an item the training data repeats is a copy;
// d₁/d₂ ≥ 1/3 is not; a ratio below 1/3 to an item that appears once is
// ambiguous (chance in low dimension) and counts as neither.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "checkpoint.h"
#include "reference_set.h"
#include "sample_curvature.h"
#include "test_util.h"
#include "verdict.h"

namespace memaudit {
namespace {

std::vector<uint64_t> Seeds(uint64_t first, int count) {
  std::vector<uint64_t> seeds(count);
  for (int i = 0; i < count; ++i) seeds[i] = first + i;
  return seeds;
}

// A diagonal Gaussian mixture with two point masses, written by Python's
// torch.jit.script with float64 buffers and a forward that casts x to
// float64 (bench/zoo/zoo_python.py gmm).
TEST(VerdictRegimesTest, ExactMixtureSavedInFloat64) {
  testing::ScratchDir dir;
  const std::string output = testing::RunCommand(
      std::string(MEMAUDIT_PYTHON) + " " + MEMAUDIT_SOURCE_DIR +
      "/bench/zoo/zoo_python.py gmm --out " + dir.path() + " --name gmm --shape 16 --seed 11 2>&1");
  ASSERT_TRUE(std::filesystem::exists(dir.Join("gmm/model.pt"))) << output;

  // Loads as saved: the float64 buffers stay float64 and so does compute.
  auto checkpoint = Checkpoint::Load(dir.Join("gmm"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ((*checkpoint)->dtype(), at::kDouble);
  // An explicit conversion is still offered.
  CheckpointOptions float32;
  float32.dtype = at::kFloat;
  auto converted = Checkpoint::Load(dir.Join("gmm"), float32);
  ASSERT_TRUE(converted.ok()) << converted.status();
  EXPECT_EQ((*converted)->dtype(), at::kFloat);

  auto reference = ReferenceSet::Load(dir.Join("gmm/reference.pt"), {16});
  ASSERT_TRUE(reference.ok()) << reference.status();
  Denoiser denoiser(*checkpoint);
  auto measured = MeasureSamples(denoiser, Seeds(5000, 64), at::Tensor(), SampleCurvatureOptions{},
                                 &*reference);
  ASSERT_TRUE(measured.ok()) << measured.status();
  for (bool use_reference : {true, false}) {
    SCOPED_TRACE(use_reference ? "with reference" : "without reference");
    const testing::VerdictRates rates = testing::CountVerdicts(
        *measured, v1::VerdictPolicy(), use_reference ? &*reference : nullptr);
    ASSERT_GE(rates.copies, 2);  // the point masses carry 10% of the weight
    ASSERT_GE(rates.others, 40);
    EXPECT_GE(rates.tpr(), 0.9);
    EXPECT_LE(rates.fpr(), 0.05);
  }
}

// The committed MNIST U-Net (checkpoints/mnist39, C++-trained, no verdict
// policy): its 9s copy the training 9 duplicated 100 times, its 3s are
// novel. Default guidance and guidance 5.
TEST(VerdictRegimesTest, TrainedMnistUNet) {
  const std::string directory = std::string(MEMAUDIT_SOURCE_DIR) + "/checkpoints/mnist39";
  auto checkpoint = Checkpoint::Load(directory);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  ASSERT_FALSE((*checkpoint)->config().has_verdict_policy());
  auto reference = ReferenceSet::Load(directory + "/reference.pt", {1, 28, 28});
  ASSERT_TRUE(reference.ok()) << reference.status();
  Denoiser denoiser(*checkpoint);
  std::vector<SampleCurvature> all;
  for (double guidance : {1.0, 5.0}) {
    SampleCurvatureOptions options;
    options.sampler.guidance = guidance;
    for (int64_t digit : {9, 3}) {
      auto measured = MeasureSamples(denoiser, Seeds(7000, 4), at::full({4}, digit, at::kLong),
                                     options, &*reference);
      ASSERT_TRUE(measured.ok()) << measured.status();
      all.insert(all.end(), measured->begin(), measured->end());
    }
  }
  for (bool use_reference : {true, false}) {
    SCOPED_TRACE(use_reference ? "with reference" : "without reference");
    const testing::VerdictRates rates =
        testing::CountVerdicts(all, v1::VerdictPolicy(), use_reference ? &*reference : nullptr);
    ASSERT_GE(rates.copies, 4);
    ASSERT_GE(rates.others, 8);
    EXPECT_GE(rates.tpr(), 0.9);
    EXPECT_EQ(rates.flagged_others, 0);
  }
}

}  // namespace
}  // namespace memaudit
