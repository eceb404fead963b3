// The toy experiment's measurement and its table: samples from a model with a
// reference set, spectra at the evaluation timestep, grouped by ground truth
// (copies of the duplicated training point vs. the rest).
#ifndef MEMAUDIT_TOOLS_TOY_TOY_EXPERIMENT_H_
#define MEMAUDIT_TOOLS_TOY_TOY_EXPERIMENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/audit/sample_curvature.h"

namespace memaudit::toy {

struct GroupStats {
  std::string name;
  int64_t count = 0;
  double mean_positive = 0, mean_flat = 0;
  int64_t max_positive = 0, min_flat = 0, max_flat = 0;
  int64_t with_flat_or_positive = 0;  // samples with n₊ > 0 or flat > 0
  double mean_max_kappa = 0, mean_min_kappa = 0;
  double median_width = 0;  // +inf when most are infinite
};

struct ToyExperimentResult {
  int64_t t = 0;
  double sigma = 0;
  int64_t dimension = 0;
  // Copies (d1/d2 < 1/3) of a point repeated in the training set.
  GroupStats copies;
  // Copies by the ratio test of a point that occurs once: in low dimension
  // a novel sample can land next to a cloud point by chance.
  GroupStats single_point_copies;
  GroupStats others;
  double seconds_sampling_and_curvature = 0;
  std::vector<SampleCurvature> samples;
};

struct ToyExperimentOptions {
  int64_t samples = 200;
  uint64_t seed = 0;
  SampleCurvatureOptions measure;
};

// Loads the model directory (with its reference.pt), samples, measures and
// groups. Fails if the directory has no reference set.
absl::StatusOr<ToyExperimentResult> RunToyExperiment(const std::string& model_directory,
                                                     const ToyExperimentOptions& options);

// A Markdown table of the two groups.
std::string FormatToyTable(const ToyExperimentResult& result);

}  // namespace memaudit::toy

#endif  // MEMAUDIT_TOOLS_TOY_TOY_EXPERIMENT_H_
