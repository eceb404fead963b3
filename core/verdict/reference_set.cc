#include "core/verdict/reference_set.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/base/status_macros.h"
#include "core/runtime/tensor_file.h"

namespace memaudit {
namespace {
constexpr double kDuplicateTolerance = 1e-6;
constexpr int64_t kMaxSpacingQueries = 2000;
constexpr int64_t kSpacingChunk = 256;

// Median over (at most kMaxSpacingQueries) items of the distance to the
// nearest non-duplicate item; 0 when every item is a duplicate of another.
double MedianSpacing(const at::Tensor& flat) {
  c10::NoGradGuard no_grad;
  const int64_t n = flat.size(0);
  const int64_t stride = std::max<int64_t>(1, n / kMaxSpacingQueries);
  at::Tensor queries = flat.slice(0, 0, n, stride);
  std::vector<at::Tensor> gaps;
  for (int64_t start = 0; start < queries.size(0); start += kSpacingChunk) {
    at::Tensor chunk = queries.slice(0, start, std::min(queries.size(0), start + kSpacingChunk));
    at::Tensor distances = at::cdist(chunk, flat);
    at::Tensor tolerance = kDuplicateTolerance * (1.0 + chunk.norm(2, 1, true));
    gaps.push_back(std::get<0>(
        distances.masked_fill(distances <= tolerance, std::numeric_limits<double>::infinity())
            .min(1)));
  }
  at::Tensor all = at::cat(gaps);
  all = all.masked_select(at::isfinite(all));
  if (all.numel() == 0) return 0.0;
  return std::get<0>(all.sort()).select(0, (all.numel() - 1) / 2).item<double>();
}
}  // namespace

ReferenceSet::ReferenceSet(at::Tensor items)
    : items_(std::move(items)), flat_double_(items_.view({items_.size(0), -1}).to(at::kDouble)) {
  spacing_ = MedianSpacing(flat_double_);
  min_value_ = flat_double_.min().item<double>();
  max_value_ = flat_double_.max().item<double>();
}

absl::StatusOr<ReferenceSet> ReferenceSet::FromTensor(const at::Tensor& items) {
  if (!items.defined() || items.dim() < 2 || items.size(0) < 2) {
    return absl::InvalidArgumentError("reference set: expected a [N, *sample_shape] tensor, N ≥ 2");
  }
  if (!at::isFloatingType(items.scalar_type())) {
    return absl::InvalidArgumentError("reference set: items must be floating point");
  }
  at::Tensor data = items.detach().to(at::kCPU, at::kFloat).contiguous();
  if (!at::isfinite(data).all().item<bool>()) {
    return absl::InvalidArgumentError("reference set: items hold non-finite values");
  }
  return ReferenceSet(std::move(data));
}

absl::StatusOr<ReferenceSet> ReferenceSet::Load(const std::string& path,
                                                const std::vector<int64_t>& sample_shape) {
  ASSIGN_OR_RETURN(const at::Tensor items, LoadTensorFile(path));
  std::vector<int64_t> expected{items.dim() > 0 ? items.size(0) : 0};
  expected.insert(expected.end(), sample_shape.begin(), sample_shape.end());
  if (items.sizes().vec() != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": shape [", absl::StrJoin(items.sizes(), ", "), "] is not [N, ",
                     absl::StrJoin(sample_shape, ", "), "]"));
  }
  auto set = FromTensor(items);
  if (!set.ok())
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", set.status().message()));
  return set;
}

absl::Status ReferenceSet::Save(const std::string& path) const {
  return SaveTensorFile(path, items_);
}

std::vector<NearestNeighbor> ReferenceSet::Nearest(const at::Tensor& samples) const {
  c10::NoGradGuard no_grad;
  const at::Tensor& reference = flat_double_;
  at::Tensor queries = samples.detach()
                           .to(at::kCPU, at::kDouble)
                           .reshape({samples.size(0), -1})
                           .clamp(min_value_, max_value_);
  at::Tensor distances = at::cdist(queries, reference);  // [B, N]
  at::Tensor nearest = distances.argmin(1);
  at::Tensor nearest_items = reference.index_select(0, nearest);
  at::Tensor to_nearest = at::cdist(nearest_items, reference);  // [B, N]
  at::Tensor tolerance = kDuplicateTolerance * (1.0 + nearest_items.norm(2, 1, true));
  at::Tensor duplicate = to_nearest <= tolerance;
  at::Tensor multiplicity = duplicate.sum(1);
  at::Tensor masked = distances.masked_fill(duplicate, std::numeric_limits<double>::infinity());
  at::Tensor second = std::get<0>(masked.min(1));
  at::Tensor gap = std::get<0>(
      to_nearest.masked_fill(duplicate, std::numeric_limits<double>::infinity()).min(1));
  std::vector<NearestNeighbor> result(samples.size(0));
  for (int64_t b = 0; b < samples.size(0); ++b) {
    NearestNeighbor& nn = result[b];
    nn.index = nearest[b].item<int64_t>();
    nn.d1 = distances[b][nn.index].item<double>();
    nn.d2 = second[b].item<double>();
    nn.ratio = nn.d1 == 0.0 ? 0.0 : nn.d1 / nn.d2;
    nn.multiplicity = multiplicity[b].item<int64_t>();
    nn.gap = gap[b].item<double>();
  }
  return result;
}

}  // namespace memaudit
