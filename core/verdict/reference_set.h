// A model's reference (training) set and nearest-neighbour ground truth
// (docs/DESIGN.md §2): d₁ = distance to the nearest item, d₂ = distance to the
// nearest item that is not a duplicate of the first; d₁/d₂ < 1/3 is a copy.
#ifndef MEMAUDIT_CORE_VERDICT_REFERENCE_SET_H_
#define MEMAUDIT_CORE_VERDICT_REFERENCE_SET_H_

#include <ATen/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace memaudit {

// d₁/d₂ below this counts as a copy (Yoon et al. 2023).
inline constexpr double kCopyRatioThreshold = 1.0 / 3.0;

struct NearestNeighbor {
  int64_t index = 0;   // nearest reference item
  double d1 = 0.0;     // L2 distance to it
  double d2 = 0.0;     // L2 distance to the nearest non-duplicate of it
  double ratio = 0.0;  // d1 / d2 (0 when d1 = 0)
  // The gap around the nearest item: its distance to the nearest item that
  // is not its duplicate. Depends on the reference set only, not on the
  // sample: the local spacing of the training data where the sample landed.
  double gap = 0.0;
  // How many reference items duplicate the nearest one (itself included):
  // > 1 for a point repeated in the training set.
  int64_t multiplicity = 1;
  bool is_copy() const { return ratio < kCopyRatioThreshold; }
};

class ReferenceSet {
 public:
  // Conventional file name inside a model directory.
  static constexpr const char* kFileName = "reference.pt";

  // `items` is [N, *sample_shape], N ≥ 2, with at least two distinct items.
  static absl::StatusOr<ReferenceSet> FromTensor(const at::Tensor& items);
  // Reads a tensor written by Python's torch.save or C++'s torch::pickle_save
  // and checks it against `sample_shape`. Errors name the file.
  static absl::StatusOr<ReferenceSet> Load(const std::string& path,
                                           const std::vector<int64_t>& sample_shape);
  // Writes the items with torch::pickle_save (loadable by torch.load).
  absl::Status Save(const std::string& path) const;

  int64_t size() const { return items_.size(0); }
  // [N, *sample_shape] float32 on the CPU.
  const at::Tensor& items() const { return items_; }

  // The typical gap between distinct training items, data units: the median
  // over items of the L2 distance to the nearest item that is not a
  // duplicate (estimated from at most 2,000 evenly strided items). Computed
  // once, at construction. The verdict compares peak radii with it.
  double spacing() const { return spacing_; }

  // The smallest and largest value of any item: the data's value range.
  double min_value() const { return min_value_; }
  double max_value() const { return max_value_; }

  // Ground truth for each of samples [B, *sample_shape]; items closer than
  // 1e-6·(1 + ‖item‖) to the nearest one count as its duplicates. Samples
  // are compared as a pipeline saves them: each value clamped to the items'
  // range [min_value, max_value], so a guided sample that overshoots the
  // data's range (over-saturation at high guidance) is judged by the image
  // it shows, not by values no saved image holds.
  std::vector<NearestNeighbor> Nearest(const at::Tensor& samples) const;

 private:
  explicit ReferenceSet(at::Tensor items);
  at::Tensor items_;
  double spacing_ = 0.0;
  double min_value_ = 0.0;
  double max_value_ = 0.0;
  // [N, d] float64 copy used by Nearest, made once rather than per query.
  at::Tensor flat_double_;
};

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_VERDICT_REFERENCE_SET_H_
