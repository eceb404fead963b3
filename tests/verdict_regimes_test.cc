// The default verdict against nearest-neighbour truth, one CI-sized check
// per regime of the verdict zoo (docs/VERDICTS.md): an exact mixture saved
// from Python in float64, the committed MNIST U-Net up to Stable
// Diffusion's default guidance 7.5, a U-Net trained with Stable
// Diffusion's scaled-linear schedule sampled as SD samples, and the
// text-conditioned model audited by prompt at guidance 7.5. (The trained
// low-dimensional MLP is checked in toy_experiment_test.) No threshold was
// read from these seeds: the default thresholds are derived, not fitted
// (docs/VERDICTS.md), and the zoo runs use seeds from 1000.
//
// Truth: d₁/d₂ < 1/3 to an item the training data repeats is a copy;
// d₁/d₂ ≥ 1/3 is not; a ratio below 1/3 to an item that appears once is
// ambiguous (chance in low dimension) and counts as neither.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/audit/sample_curvature.h"
#include "core/checkpoint/load_model.h"
#include "core/checkpoint/text_encoder.h"
#include "core/spectra/arnoldi.h"
#include "core/verdict/reference_set.h"
#include "core/verdict/verdict.h"
#include "tests/test_util.h"

namespace memaudit {
namespace {

std::vector<uint64_t> Seeds(uint64_t first, int count) {
  std::vector<uint64_t> seeds(count);
  for (int i = 0; i < count; ++i) seeds[i] = first + i;
  return seeds;
}

// A committed checkpoint (checkpoints/NAME, 1×28×28, no verdict policy) and
// its reference set; ASSERTs inside, so call it through ASSERT_NO_FATAL_FAILURE.
void LoadCommitted(const std::string& name, std::shared_ptr<const DiffusionNetwork>* checkpoint,
                   std::optional<ReferenceSet>* reference) {
  const std::string directory = std::string(MEMAUDIT_SOURCE_DIR) + "/checkpoints/" + name;
  auto loaded = LoadModel(directory);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_FALSE((*loaded)->config().has_verdict_policy());
  *checkpoint = *loaded;
  auto items = ReferenceSet::Load(directory + "/reference.pt", {1, 28, 28});
  ASSERT_TRUE(items.ok()) << items.status();
  reference->emplace(*std::move(items));
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
  auto checkpoint = LoadModel(dir.Join("gmm"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ((*checkpoint)->dtype(), at::kDouble);
  // An explicit conversion is still offered.
  CheckpointOptions float32;
  float32.dtype = at::kFloat;
  auto converted = LoadModel(dir.Join("gmm"), float32);
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
// novel. Default guidance, the replication's 5 and Stable Diffusion's 7.5.
// No novel sample is flagged. A 9 that guidance distorts past the ratio
// test's 1/3 still sits on the 9's peak and may be MEMORIZED (the zoo: 11 of
// 11 such 9s at guidance 7.5, docs/VERDICTS.md); it is not asserted either
// way.
TEST(VerdictRegimesTest, TrainedMnistUNet) {
  std::shared_ptr<const DiffusionNetwork> checkpoint;
  std::optional<ReferenceSet> reference;
  ASSERT_NO_FATAL_FAILURE(LoadCommitted("mnist39", &checkpoint, &reference));
  Denoiser denoiser(checkpoint);
  std::vector<SampleCurvature> all;
  for (double guidance : {1.0, 5.0, 7.5}) {
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
    ASSERT_GE(rates.copies, 6);
    ASSERT_GE(rates.novel, 12);
    EXPECT_GE(rates.tpr(), 0.9);
    EXPECT_EQ(rates.flagged_novel, 0);
  }
}

// checkpoints/unet_classes_sd: a class-conditional U-Net trained (in
// Python, bench/zoo) with Stable Diffusion's scaled-linear schedule (β
// 0.00085–0.012) and classifier-free dropout; class 1 is one digit ×100,
// class 0 1,500 distinct digits. Sampled as Stable Diffusion samples:
// steps_offset 1 (so the last step is t = 1), DDIM, guidance 1 and 7.5.
// Before the σ = 0.08 evaluation level and the peak centring, every copy
// here was PARTIAL at both guidances and the release gate passed the model.
//
// What is asserted is what the zoo measured on other seeds (docs/VERDICTS.md):
// the memorized class is MEMORIZED without a reference set at both
// guidances (the gate), every copy is MEMORIZED with and without the
// reference set (32 of 32 in each zoo row since guided states are centred
// in eight steps; 22 of 32 at 7.5 with one step), and no sample of the
// generalizing class is flagged. Not asserted, because the zoo does not
// support it: that no class-1 sample off the training data is flagged —
// the model sometimes puts a sharp peak where no training item is (1 of 32
// zoo samples at guidance 1; here seed 7002), which the curvature cannot
// tell from a copy.
TEST(VerdictRegimesTest, ScaledLinearScheduleAtStableDiffusionSettings) {
  std::shared_ptr<const DiffusionNetwork> checkpoint;
  std::optional<ReferenceSet> reference;
  ASSERT_NO_FATAL_FAILURE(LoadCommitted("unet_classes_sd", &checkpoint, &reference));
  Denoiser denoiser(checkpoint);
  const ResolvedPolicy no_reference = ResolvePolicy(v1::VerdictPolicy(), nullptr);
  const ResolvedPolicy with_reference = ResolvePolicy(v1::VerdictPolicy(), &*reference);
  for (double guidance : {1.0, 7.5}) {
    SCOPED_TRACE(absl::StrCat("guidance ", guidance));
    SampleCurvatureOptions options;
    options.sampler.guidance = guidance;
    options.sampler.steps_offset = 1;
    for (int64_t label : {1, 0}) {
      SCOPED_TRACE(absl::StrCat("class ", label));
      auto measured = MeasureSamples(denoiser, Seeds(7000, 4), at::full({4}, label, at::kLong),
                                     options, &*reference);
      ASSERT_TRUE(measured.ok()) << measured.status();
      // The evaluation point is the σ = 0.08 level, not the last step (t = 1).
      EXPECT_NEAR(measured->front().spectra.front().sigma, kDefaultEvaluationSigma, 0.004);
      int64_t memorized = 0, flagged = 0, copies = 0, copies_memorized = 0;
      for (const SampleCurvature& sample : *measured) {
        const SpectrumSummary& summary = sample.spectra.front().summary;
        const Verdict alone = JudgeSample(summary, no_reference);
        const Verdict with = JudgeSample(summary, with_reference, &*sample.truth);
        memorized += alone == Verdict::kMemorized;
        flagged += alone != Verdict::kNotMemorized || with != Verdict::kNotMemorized;
        if (sample.truth->is_copy() && sample.truth->multiplicity > 1) {
          ++copies;
          copies_memorized += alone == Verdict::kMemorized && with == Verdict::kMemorized;
        }
      }
      if (label == 1) {
        // What a release gate with --fail-on memorized sees.
        EXPECT_EQ(JudgeCondition(memorized, 0, 4, no_reference), Verdict::kMemorized);
        ASSERT_GE(copies, 3);
        EXPECT_EQ(copies_memorized, copies);
      } else {
        EXPECT_EQ(flagged, 0);
      }
    }
  }
}

// checkpoints/textmnist, the text-conditioned U-Net audited by prompt: ten
// memorized prompts (each caption's image ×100) and thirty others. Its
// memorized prompts' copies are where the eight-step centring was needed:
// with one Tweedie step they sat on shallow saddles (n₊ = 1–2, κ_max a few
// hundredths) and 2 of the 10 prompts were not MEMORIZED at guidance 7.5.
// Here the ten memorized prompts and every third other one, two generations
// each at Stable Diffusion's default guidance 7.5, on seeds 7000+ (the zoo
// measured 1000+ and 2000+): no other prompt has a flagged sample, at least
// nine memorized prompts are MEMORIZED by the service's condition rule, and
// so the model is. Not ten: mem-00 ("... the marlowe print") is the known
// shortfall (docs/VERDICTS.md). Its copies sit on a peak with one direction
// left flat (κ_max −0.01…+0.012 next to −0.05), so the sign test calls most
// of them saddles: 2 of 4 MEMORIZED in each zoo seed set, 2 of 8 on seeds
// 7000–7007, 0 of the 2 here.
TEST(VerdictRegimesTest, TextConditionedModelByPromptAtGuidance7_5) {
  std::shared_ptr<const DiffusionNetwork> checkpoint;
  std::optional<ReferenceSet> reference;
  ASSERT_NO_FATAL_FAILURE(LoadCommitted("textmnist", &checkpoint, &reference));
  std::ifstream lines(std::string(MEMAUDIT_SOURCE_DIR) +
                      "/checkpoints/textmnist/prompts/eval.jsonl");
  std::vector<std::pair<std::string, bool>> prompts;  // (prompt, memorized)
  int others = 0;
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json entry = nlohmann::json::parse(line);
    const bool memorized = entry.at("memorized").get<bool>();
    if (memorized || others++ % 3 == 0) {
      prompts.emplace_back(entry.at("prompt").get<std::string>(), memorized);
    }
  }
  ASSERT_EQ(prompts.size(), 20u);
  Denoiser denoiser(checkpoint);
  const ResolvedPolicy policy = ResolvePolicy(v1::VerdictPolicy(), &*reference);
  SampleCurvatureOptions options;
  options.sampler.guidance = 7.5;
  constexpr int kGenerations = 2;
  int memorized_prompts = 0;
  int64_t memorized_samples_total = 0;
  Verdict worst = Verdict::kNotMemorized;
  for (const auto& [prompt, memorized] : prompts) {
    SCOPED_TRACE(prompt);
    auto embedding = checkpoint->text_encoder()->Encode({prompt});
    ASSERT_TRUE(embedding.ok()) << embedding.status();
    std::vector<int64_t> repeat(embedding->dim(), 1);
    repeat[0] = kGenerations;
    auto measured = MeasureSamples(denoiser, Seeds(7000, kGenerations), embedding->repeat(repeat),
                                   options, &*reference);
    ASSERT_TRUE(measured.ok()) << measured.status();
    int64_t memorized_samples = 0, flagged = 0;
    for (const SampleCurvature& sample : *measured) {
      const Verdict verdict = JudgeSample(sample.spectra.front().summary, policy, &*sample.truth);
      memorized_samples += verdict == Verdict::kMemorized;
      flagged += verdict != Verdict::kNotMemorized;
    }
    const Verdict condition =
        JudgeCondition(memorized_samples, flagged - memorized_samples, kGenerations, policy);
    worst = std::max(worst, condition);
    memorized_samples_total += memorized_samples;
    if (memorized) {
      memorized_prompts += condition == Verdict::kMemorized;
    } else {
      EXPECT_EQ(flagged, 0);
    }
  }
  EXPECT_GE(memorized_prompts, 9);
  EXPECT_EQ(JudgeModel(worst, memorized_samples_total, kGenerations * 20, policy),
            Verdict::kMemorized);
}

// Matrix-free spectra (Arnoldi, the path of every model above
// --max_dense_dimension) with the service's defaults (k = 24, the
// verdict-grade tolerance), against the dense spectrum on the same samples:
// κ_max and n₊ among the k found agree, and the verdict is never MORE
// memorized than the dense one, because the radius of a partial spectrum is
// an upper bound (the d − k unseen directions are taken as flat as the k-th
// found). It can be less: bench/verdict_grade.cc measured 1 of 12 mnist39
// copies called PARTIAL at k = 24 (seed 500), and here seeds 7101 and 7102
// move one verdict step each (docs/PERFORMANCE.md). The verdict-grade
// tolerance gives the verdicts the earlier default 1e-6 gave, and the
// default product and subspace (the retained transpose, 3k) give the verdicts
// the earlier ones (JVPs, max(2k + 1, k + 16)) gave.
TEST(VerdictRegimesTest, MatrixFreeVerdictsAreNeverMoreMemorizedThanDense) {
  std::shared_ptr<const DiffusionNetwork> checkpoint;
  std::optional<ReferenceSet> reference;
  ASSERT_NO_FATAL_FAILURE(LoadCommitted("mnist39", &checkpoint, &reference));
  Denoiser denoiser(checkpoint);
  SampleCurvatureOptions dense, matrix_free, tight, as_before;
  dense.method = SpectrumMethod::kDense;
  matrix_free.method = SpectrumMethod::kArnoldi;
  matrix_free.arnoldi.tolerance = kVerdictGradeTolerance;
  tight.method = SpectrumMethod::kArnoldi;
  tight.arnoldi.tolerance = 1e-6;
  const int64_t k = matrix_free.arnoldi.num_eigenvalues;
  as_before = matrix_free;
  as_before.arnoldi.product = ArnoldiProduct::kJvp;
  as_before.arnoldi.subspace = std::max(2 * k + 1, k + 16);
  as_before.arnoldi.lockstep_samples = 1;                        // one spectrum after another
  ASSERT_GE(LockstepGroup(matrix_free.arnoldi, 784, false), 3);  // the 3 seeds solve in lockstep
  ASSERT_NE(as_before.arnoldi.subspace, ArnoldiSubspace(matrix_free.arnoldi, 784));
  const ResolvedPolicy policy = ResolvePolicy(v1::VerdictPolicy(), &*reference);
  int64_t copies = 0, same = 0, total = 0;
  for (int64_t digit : {9, 3}) {
    SCOPED_TRACE(absl::StrCat("digit ", digit));
    const at::Tensor labels = at::full({3}, digit, at::kLong);
    auto by_dense = MeasureSamples(denoiser, Seeds(7100, 3), labels, dense, &*reference);
    auto by_arnoldi = MeasureSamples(denoiser, Seeds(7100, 3), labels, matrix_free, &*reference);
    auto by_tight = MeasureSamples(denoiser, Seeds(7100, 3), labels, tight, &*reference);
    auto by_before = MeasureSamples(denoiser, Seeds(7100, 3), labels, as_before, &*reference);
    ASSERT_TRUE(by_before.ok()) << by_before.status();
    ASSERT_TRUE(by_dense.ok()) << by_dense.status();
    ASSERT_TRUE(by_arnoldi.ok()) << by_arnoldi.status();
    ASSERT_TRUE(by_tight.ok()) << by_tight.status();
    for (size_t i = 0; i < by_dense->size(); ++i) {
      const SampleCurvature& a = (*by_dense)[i];
      const SampleCurvature& b = (*by_arnoldi)[i];
      const SpectrumSummary& full = a.spectra.front().summary;
      const SpectrumSummary& partial = b.spectra.front().summary;
      ASSERT_EQ(b.spectra.front().method, SpectrumMethod::kArnoldi);
      EXPECT_NEAR(partial.max_kappa, full.max_kappa, 1e-4);
      EXPECT_EQ(std::min(partial.positive_count, k), std::min(full.positive_count, k))
          << "seed " << a.seed;
      EXPECT_GE(partial.noise_radius, full.noise_radius * (1 - 1e-6)) << "seed " << a.seed;
      const Verdict expected = JudgeSample(full, policy, &*a.truth);
      const Verdict found = JudgeSample(partial, policy, &*b.truth);
      const SampleCurvature& c = (*by_tight)[i];
      EXPECT_EQ(JudgeSample(c.spectra.front().summary, policy, &*c.truth), found)
          << "seed " << a.seed << ": tolerance 1e-6 and verdict-grade differ";
      EXPECT_LT(b.spectra.front().matvecs, c.spectra.front().matvecs) << "seed " << a.seed;
      const SampleCurvature& e = (*by_before)[i];
      EXPECT_EQ(JudgeSample(e.spectra.front().summary, policy, &*e.truth), found)
          << "seed " << a.seed
          << ": the earlier product, subspace and one-at-a-time solves give another verdict";
      EXPECT_NEAR(e.spectra.front().summary.max_kappa, partial.max_kappa, 1e-4);
      EXPECT_LE(static_cast<int>(found), static_cast<int>(expected))
          << "seed " << a.seed << ": noise radius dense " << full.noise_radius
          << ", matrix-free bound " << partial.noise_radius;
      copies += a.truth->is_copy() ? 1 : 0;
      same += found == expected ? 1 : 0;
      ++total;
    }
  }
  EXPECT_GE(copies, 2);  // the comparison covers copies, not only novel samples
  EXPECT_GE(same, total / 2);
}

}  // namespace
}  // namespace memaudit
