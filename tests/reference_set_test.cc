#include "core/verdict/reference_set.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "core/audit/sample_curvature.h"
#include "tests/test_util.h"

namespace memaudit {
namespace {

using testing::ScratchDir;

TEST(ReferenceSetTest, RatioSkipsDuplicatesOfTheNearestItem) {
  // Item 0 is repeated three times; item 3 is 4 away from it, item 4 far.
  at::Tensor items =
      at::tensor({0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 4.0, 0.0, 10.0, 10.0}, at::kFloat).view({5, 2});
  auto set = ReferenceSet::FromTensor(items);
  ASSERT_TRUE(set.ok());
  at::Tensor queries = at::tensor({0.3, 0.4, 3.0, 0.0}, at::kFloat).view({2, 2});
  std::vector<NearestNeighbor> nn = set->Nearest(queries);
  EXPECT_EQ(nn[0].multiplicity, 3);
  EXPECT_NEAR(nn[0].d1, 0.5, 1e-6);
  EXPECT_NEAR(nn[0].d2, std::hypot(3.7, 0.4), 1e-6);  // to item 3, not to a duplicate
  EXPECT_TRUE(nn[0].is_copy());
  EXPECT_EQ(nn[1].index, 3);
  EXPECT_EQ(nn[1].multiplicity, 1);
  EXPECT_NEAR(nn[1].ratio, 1.0 / 3.0, 1e-6);
  EXPECT_FALSE(nn[1].is_copy());
}

// Values beyond the items' range are clamped before comparing: an
// over-saturated copy (contrast stretched past the data's range, as strong
// guidance produces) is judged by the image it shows. Inside the range
// nothing changes.
TEST(ReferenceSetTest, ComparesSamplesClampedToTheDataRange) {
  // Items in [-1, 1]: a "digit" repeated twice and two others.
  at::Tensor items = at::tensor({-1.0, 1.0, -1.0, 1.0,  //
                                 -1.0, 1.0, -1.0, 1.0,  //
                                 1.0, -1.0, 0.0, 0.0,   //
                                 0.0, 0.0, 1.0, -1.0},
                                at::kFloat)
                         .view({4, 4});
  auto set = ReferenceSet::FromTensor(items);
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(set->min_value(), -1.0);
  EXPECT_EQ(set->max_value(), 1.0);
  // The copy stretched 2.5x: unclamped it would be 3.0 from the item
  // (ratio 0.49, not a copy); clamped it is the item.
  at::Tensor stretched = 2.5 * items.narrow(0, 0, 1);
  NearestNeighbor over = set->Nearest(stretched)[0];
  EXPECT_EQ(over.index, 0);
  EXPECT_NEAR(over.d1, 0.0, 1e-9);
  EXPECT_TRUE(over.is_copy());
  EXPECT_EQ(over.multiplicity, 2);
  // Inside the range the distances are the plain ones.
  at::Tensor inside = at::tensor({-0.5, 0.5, -0.5, 0.5}, at::kFloat).view({1, 4});
  NearestNeighbor plain = set->Nearest(inside)[0];
  EXPECT_NEAR(plain.d1, 1.0, 1e-6);
  EXPECT_NEAR(plain.d2, std::sqrt(2.25 + 2.25 + 0.25 + 0.25), 1e-6);
}

TEST(ReferenceSetTest, SaveLoadRoundTripAndShapeCheck) {
  ScratchDir dir;
  auto set = ReferenceSet::FromTensor(at::randn({7, 1, 2, 2}));
  ASSERT_TRUE(set.ok());
  ASSERT_TRUE(set->Save(dir.Join("reference.pt")).ok());
  auto loaded = ReferenceSet::Load(dir.Join("reference.pt"), {1, 2, 2});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(at::equal(loaded->items(), set->items()));
  auto wrong = ReferenceSet::Load(dir.Join("reference.pt"), {4});
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("reference.pt"), std::string::npos);
  testing::WriteFile(dir.Join("junk.pt"), "junk");
  EXPECT_EQ(ReferenceSet::Load(dir.Join("junk.pt"), {4}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReferenceSet::Load(dir.Join("missing.pt"), {4}).status().code(),
            absl::StatusCode::kNotFound);
}

// The empirical mixture memorizes every training point: all samples are
// copies and every direction is steep (κ ≈ −1, no flat directions).
TEST(MeasureSamplesTest, EmpiricalMixtureSamplesAreSharpCopies) {
  ScratchDir dir;
  at::manual_seed(3);
  at::Tensor points = 3.0 * at::randn({20, 8}, at::kDouble);
  auto checkpoint =
      testing::WriteAndLoadMixture(dir.path(), "emp", toy::EmpiricalMixture(points, 1e-6),
                                   v1::NoiseSchedule::LINEAR, v1::EPSILON, at::kFloat);
  ASSERT_NE(checkpoint, nullptr);
  auto reference = ReferenceSet::FromTensor(points);
  ASSERT_TRUE(reference.ok());
  Denoiser denoiser(checkpoint);
  SampleCurvatureOptions options;
  options.sampler.num_steps = 50;
  options.timesteps = {};  // default: first step with σ < 0.1 (t = 20)
  std::vector<uint64_t> seeds = {1, 2, 3, 4, 5, 6};
  int progress_calls = 0;
  auto measured = MeasureSamples(denoiser, seeds, at::Tensor(), options, &*reference, {},
                                 [&](const SampleCurvatureProgress&) { ++progress_calls; });
  ASSERT_TRUE(measured.ok()) << measured.status();
  EXPECT_GT(progress_calls, 50);
  for (const SampleCurvature& s : *measured) {
    ASSERT_EQ(s.spectra.size(), 1u);
    EXPECT_EQ(s.spectra[0].t, 20);
    EXPECT_TRUE(s.truth->is_copy()) << s.truth->ratio;
    EXPECT_EQ(s.spectra[0].summary.flat_count, 0);
    EXPECT_EQ(s.spectra[0].summary.positive_count, 0);
    EXPECT_NEAR(s.spectra[0].summary.max_kappa, -1.0, 0.01);
  }
  // A κ profile over several timesteps, one spectrum each, in order.
  options.timesteps = {400, 100, 20};
  auto profile = MeasureSamples(denoiser, {7}, at::Tensor(), options, nullptr);
  ASSERT_TRUE(profile.ok()) << profile.status();
  ASSERT_EQ((*profile)[0].spectra.size(), 3u);
  EXPECT_EQ((*profile)[0].spectra[1].t, 100);
  EXPECT_FALSE((*profile)[0].truth.has_value());
}

}  // namespace
}  // namespace memaudit
