// The committed MNIST checkpoint (checkpoints/mnist39, made by
// `memaudit-mnist train`, see its README): generated 9s that copy the
// duplicated training 9 (nearest-neighbour truth) are flagged (MEMORIZED or
// PARTIAL) and have no positive curvature; those that do not copy it, and
// the novel 3s, are NOT_MEMORIZED — dense spectra at d = 784 through the
// same code as audits.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "checkpoint.h"
#include "reference_set.h"
#include "sample_curvature.h"
#include "verdict.h"

namespace memaudit {
namespace {

TEST(MnistCheckpointTest, MemorizedNineAndNovelThree) {
  const std::string directory = std::string(MEMAUDIT_SOURCE_DIR) + "/checkpoints/mnist39";
  auto checkpoint = Checkpoint::Load(directory);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  auto reference = ReferenceSet::Load(directory + "/reference.pt", {1, 28, 28});
  ASSERT_TRUE(reference.ok()) << reference.status();
  const ResolvedPolicy policy =
      ResolvePolicy((*checkpoint)->config().verdict_policy(), &*reference);
  Denoiser denoiser(*checkpoint);
  SampleCurvatureOptions options;
  options.sampler.guidance = 5.0;
  int copies = 0, novel_threes = 0;
  for (int64_t digit : {9, 3}) {
    const std::vector<uint64_t> seeds = {0, 1, 2, 3};
    auto measured =
        MeasureSamples(denoiser, seeds, at::full({4}, digit, at::kLong), options, &*reference);
    ASSERT_TRUE(measured.ok()) << measured.status();
    for (const SampleCurvature& sample : *measured) {
      const SpectrumSummary& s = sample.spectra.front().summary;
      const Verdict verdict = JudgeSample(s, policy);
      SCOPED_TRACE(::testing::Message()
                   << "digit " << digit << " seed " << sample.seed << ": ratio "
                   << sample.truth->ratio << ", n+ " << s.positive_count << ", width " << s.width);
      const bool copy = sample.truth->is_copy() && sample.truth->multiplicity > 1;
      if (copy) {
        ++copies;
        EXPECT_EQ(digit, 9);
        EXPECT_EQ(s.positive_count, 0);
        EXPECT_NE(verdict, Verdict::kNotMemorized);
      } else {
        EXPECT_EQ(verdict, Verdict::kNotMemorized);
        if (digit == 3) ++novel_threes;
      }
    }
  }
  EXPECT_GE(copies, 1);        // the 9s do copy the training 9
  EXPECT_EQ(novel_threes, 4);  // no 3 is a copy
}

}  // namespace
}  // namespace memaudit
