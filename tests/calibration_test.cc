#include "core/early/calibration.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace memaudit {
namespace {

TEST(RocTest, PerfectAndInvertedAndTied) {
  RocSummary perfect = ComputeRoc({5, 6, 7}, {1, 2, 3}, /*higher_is_memorized=*/true);
  EXPECT_DOUBLE_EQ(perfect.auc, 1.0);
  EXPECT_DOUBLE_EQ(perfect.tpr_at_1pct_fpr, 1.0);
  EXPECT_DOUBLE_EQ(perfect.threshold, 5.0);  // flag >= 5: no negative flagged
  RocSummary inverted = ComputeRoc({5, 6, 7}, {1, 2, 3}, /*higher_is_memorized=*/false);
  EXPECT_DOUBLE_EQ(inverted.auc, 0.0);
  EXPECT_DOUBLE_EQ(inverted.tpr_at_1pct_fpr, 0.0);
  RocSummary tied = ComputeRoc({1, 1}, {1, 1}, true);
  EXPECT_DOUBLE_EQ(tied.auc, 0.5);
}

// Mann–Whitney by hand: positives {3, 5}, negatives {1, 4}: pairs won
// (3>1), (5>1), (5>4) of 4 → 0.75. At FPR 0 the best cut is 5 (TPR 1/2).
TEST(RocTest, HandComputedExample) {
  RocSummary roc = ComputeRoc({3, 5}, {1, 4}, true);
  EXPECT_DOUBLE_EQ(roc.auc, 0.75);
  EXPECT_DOUBLE_EQ(roc.tpr_at_1pct_fpr, 0.5);
  EXPECT_DOUBLE_EQ(roc.threshold, 5.0);
  // Youden: cut 3 gives TPR 1, FPR 1/2 (J = 0.5); cut 5 gives 0.5 − 0 (J = 0.5):
  // the first maximum in ascending cut order is kept.
  EXPECT_DOUBLE_EQ(roc.youden_threshold, 3.0);
}

TEST(RocTest, LowerIsMemorizedWithInfiniteWidths) {
  const double inf = std::numeric_limits<double>::infinity();
  RocSummary roc = ComputeRoc({0.01, 0.02}, {0.5, inf}, /*higher_is_memorized=*/false);
  EXPECT_DOUBLE_EQ(roc.auc, 1.0);
  EXPECT_DOUBLE_EQ(roc.threshold, 0.02);  // flag width <= 0.02
}

// An infinite sharpness is the most memorized score, as the label-free
// scores have it; NaN, which has no order, the least. A set no finite cut
// separates at FPR ≤ 1% gets an infinite threshold.
TEST(RocTest, InfiniteSharpnessIsTheMostMemorized) {
  const double inf = std::numeric_limits<double>::infinity();
  RocSummary roc = ComputeRoc({2, inf}, {1, 3}, /*higher_is_memorized=*/true);
  EXPECT_DOUBLE_EQ(roc.auc, 0.75);  // (2>1), (∞>1), (∞>3) of 4
  EXPECT_DOUBLE_EQ(roc.tpr_at_1pct_fpr, 0.5);
  RocSummary nan = ComputeRoc({std::nan(""), 5}, {1, 3}, true);
  EXPECT_DOUBLE_EQ(nan.auc, 0.5);
  RocSummary none = ComputeRoc({1, 2}, {3, 4}, true);
  EXPECT_DOUBLE_EQ(none.tpr_at_1pct_fpr, 0.0);
  EXPECT_FALSE(std::isfinite(none.threshold));
}

// Label-free scores: log values against median and 1.4826·MAD.
TEST(RobustOutlierTest, FlagsTheSharpConditionOnly) {
  // Nine ordinary conditions spread around 1 and one 100× sharper.
  std::vector<double> values = {0.8, 0.9, 1.0, 1.1, 1.25, 0.85, 0.95, 1.05, 1.2, 100.0};
  const std::vector<double> z = RobustOutlierScores(values);
  ASSERT_EQ(z.size(), values.size());
  for (size_t i = 0; i + 1 < z.size(); ++i) EXPECT_LT(z[i], kOutlierZThreshold) << i;
  EXPECT_GT(z.back(), 10.0);
  // Hand-computed: logs of {1, e, e², e³, e⁴} have median 2 and MAD 1.
  const double e = std::exp(1.0);
  const std::vector<double> hand = RobustOutlierScores({1, e, e * e, e * e * e, e * e * e * e});
  EXPECT_NEAR(hand[4], 2.0 / 1.4826, 1e-9);
  EXPECT_NEAR(hand[0], -2.0 / 1.4826, 1e-9);
  // Too few to compare; no spread at all.
  EXPECT_TRUE(RobustOutlierScores({1.0, 2.0}).empty());
  for (double v : RobustOutlierScores({3.0, 3.0, 3.0})) EXPECT_EQ(v, 0.0);
}

// The robust z without the log: signed values (a cosine) work.
TEST(CalibrationTest, RobustZScoresOfSignedValues) {
  const std::vector<double> z = RobustZScores({-2, -1, 0, 1, 2});
  ASSERT_EQ(z.size(), 5u);
  EXPECT_NEAR(z[4], 2.0 / 1.4826, 1e-12);  // median 0, MAD 1
  EXPECT_NEAR(z[0], -2.0 / 1.4826, 1e-12);
  EXPECT_TRUE(RobustZScores({0.5, -0.5}).empty());
  // A NaN has no order: it scores 0 and leaves the others' centre alone; a
  // diverging value scores +∞ (flagged), also through the log form.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<double> odd = RobustZScores({-2, -1, 0, 1, 2, nan, inf});
  EXPECT_EQ(odd[5], 0.0);
  EXPECT_EQ(odd[6], inf);
  EXPECT_NEAR(odd[4], 2.0 / 1.4826, 1e-12);
  const std::vector<double> logs = RobustOutlierScores({1, 2, 3, 4, inf, nan});
  EXPECT_EQ(logs[4], inf);
  EXPECT_LT(logs[5], 0.0);  // clamped to the smallest positive value
}

// The combined anisotropy score: each term in units of its own spread, so
// rescaling either input (another model's norms, a cosine's range) leaves
// the scores unchanged; the condition that stands out in both terms stands
// out most; one standing out in a single term is between.
TEST(CalibrationTest, AnisotropyScoresWeighTheTermsByTheirSpread) {
  const std::vector<double> norms = {1.0, 1.2, 0.9, 1.1, 0.95, 1.05, 6.0, 1.0};
  const std::vector<double> alignments = {0.01, -0.02, 0.0, 0.02, -0.01, 0.03, 0.4, 0.35};
  const std::vector<double> scores = AnisotropyScores(norms, alignments);
  ASSERT_EQ(scores.size(), norms.size());
  // By hand: the sum of the two robust z's.
  const std::vector<double> norm_z = RobustOutlierScores(norms);
  const std::vector<double> alignment_z = RobustZScores(alignments);
  for (size_t i = 0; i < scores.size(); ++i) {
    EXPECT_NEAR(scores[i], norm_z[i] + alignment_z[i], 1e-12) << i;
  }
  std::vector<double> scaled_norms = norms, scaled_alignments = alignments;
  for (double& v : scaled_norms) v *= 1000.0;
  for (double& v : scaled_alignments) v *= 0.1;
  const std::vector<double> rescaled = AnisotropyScores(scaled_norms, scaled_alignments);
  for (size_t i = 0; i < scores.size(); ++i) EXPECT_NEAR(rescaled[i], scores[i], 1e-9) << i;
  EXPECT_EQ(std::max_element(scores.begin(), scores.end()) - scores.begin(), 6);
  for (size_t i = 0; i < 6; ++i) EXPECT_LT(scores[i], scores[7]) << i;
  // The label-free score is the robust z of the sums: both outliers flagged.
  const std::vector<double> z = AnisotropyOutlierScores(norms, alignments);
  ASSERT_EQ(z.size(), norms.size());
  for (size_t i = 0; i < 6; ++i) EXPECT_LT(z[i], kOutlierZThreshold) << i;
  EXPECT_GE(z[6], kOutlierZThreshold);
  EXPECT_GE(z[7], kOutlierZThreshold);
  // The label-free score by metric: the log form for norms, the plain one
  // for a cosine, the combined one for the pair.
  EXPECT_EQ(LabelFreeOutlierScores(EarlyMetric::kAnisotropy, norms, alignments), z);
  EXPECT_EQ(LabelFreeOutlierScores(EarlyMetric::kJeonSharpness, norms), RobustOutlierScores(norms));
  EXPECT_EQ(LabelFreeOutlierScores(EarlyMetric::kAnisotropyAlignment, alignments),
            RobustZScores(alignments));
  // Mismatched or too few: no scores, not a guess.
  EXPECT_TRUE(AnisotropyScores({1, 2, 3}, {0.1, 0.2}).empty());
  EXPECT_TRUE(AnisotropyScores({1, 2}, {0.1, 0.2}).empty());
}

}  // namespace
}  // namespace memaudit
