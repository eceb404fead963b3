// Shared helpers for memaudit's tests: scratch directories and analytic
// model directories.
#ifndef MEMAUDIT_TESTS_TEST_UTIL_H_
#define MEMAUDIT_TESTS_TEST_UTIL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/audit/sample_curvature.h"
#include "core/checkpoint/load_model.h"
#include "core/verdict/reference_set.h"
#include "memaudit/v1/model_config.pb.h"
#include "tools/toy/gaussian_mixture.h"

namespace memaudit::testing {

// A fresh directory under the system temp dir, removed on destruction.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Runs a shell command, returns its standard output, and records a test
// failure (naming the command and its output) when it exits non-zero.
std::string RunCommand(const std::string& command);

// The default verdict against nearest-neighbour truth: how many copies of
// an item the training data repeats are MEMORIZED, and how many samples
// that copy nothing are (a ratio-test hit on an item that appears once,
// chance in low dimension, counts as neither). The policy is resolved with
// `reference` (may be null); each sample's truth must be set, and its gap
// is used only when `reference` is given. Of the others, `novel` counts
// those whose nearest training item appears once; the rest are
// reproductions (nearest to a repeated item, yet past the ratio test's 1/3:
// guided samples distorted by the overshoot, docs/VERDICTS.md).
struct VerdictRates {
  int copies = 0, flagged_copies = 0, others = 0, flagged_others = 0;
  int novel = 0, flagged_novel = 0;
  double tpr() const { return copies ? static_cast<double>(flagged_copies) / copies : 0; }
  double fpr() const { return others ? static_cast<double>(flagged_others) / others : 0; }
};
VerdictRates CountVerdicts(const std::vector<SampleCurvature>& samples,
                           const v1::VerdictPolicy& config, const ReferenceSet* reference);

// A valid config for a d-dimensional model.
v1::ModelConfig MixtureConfig(const std::string& name, int64_t dim,
                              v1::NoiseSchedule::Kind schedule = v1::NoiseSchedule::LINEAR,
                              v1::PredictionType prediction = v1::EPSILON, int64_t num_classes = 0);

// Writes the exact model of `mixture` into <repository>/<name> (config from
// MixtureConfig, edited by `edit` when given).
absl::Status WriteMixtureDirectory(const std::string& repository, const std::string& name,
                                   const toy::GaussianMixture& mixture,
                                   v1::NoiseSchedule::Kind schedule, v1::PredictionType prediction,
                                   int64_t num_classes = 0,
                                   const std::function<void(v1::ModelConfig*)>& edit = {});

// A class-conditional mixture in `dim` dimensions with one component per
// class: class 0 a point mass (variance 1e-6 per coordinate: every sample
// of it copies its mean), the other classes broad unit Gaussians.
toy::GaussianMixture PointMassAndBroadClasses(int64_t dim, int64_t classes);

// Writes the exact model of `mixture` into <repository>/<name> and loads
// it; on failure records a test failure and returns null.
std::shared_ptr<const DiffusionNetwork> WriteAndLoadMixture(
    const std::string& repository, const std::string& name, const toy::GaussianMixture& mixture,
    v1::NoiseSchedule::Kind schedule, v1::PredictionType prediction,
    at::ScalarType dtype = at::kDouble, int64_t num_classes = 0);

// Writes <repository>/<config.name()> with a TorchScript module whose
// methods are compiled from `source` (TorchScript, e.g. "def forward(self,
// x: Tensor, t: Tensor) -> Tensor:\n    return x\n").
absl::Status WriteScriptedModel(const std::string& repository, const v1::ModelConfig& config,
                                const std::string& source);

// The TorchScript source of a forward(x, t) that never returns (it counts
// for 2^63 steps): a model that wedges whatever calls it.
inline constexpr char kForwardThatNeverReturns[] =
    "def forward(self, x: Tensor, t: Tensor) -> Tensor:\n"
    "    i = 0\n"
    "    while i >= 0:\n"
    "        i = i + 1\n"
    "    return x\n";

// Writes a file with `contents`, mode 0644 whatever the umask.
void WriteFile(const std::string& path, const std::string& contents);

}  // namespace memaudit::testing

#endif  // MEMAUDIT_TESTS_TEST_UTIL_H_
