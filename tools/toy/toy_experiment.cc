#include "tools/toy/toy_experiment.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>

#include "absl/strings/str_format.h"
#include "core/base/status_macros.h"
#include "core/checkpoint/load_model.h"
#include "core/verdict/reference_set.h"

namespace memaudit::toy {
namespace {

GroupStats Summarize(const std::string& name, const std::vector<const SampleCurvature*>& group) {
  GroupStats stats;
  stats.name = name;
  stats.count = static_cast<int64_t>(group.size());
  if (group.empty()) return stats;
  stats.min_flat = std::numeric_limits<int64_t>::max();
  std::vector<double> widths;
  for (const SampleCurvature* sample : group) {
    const SpectrumSummary& s = sample->spectra.front().summary;
    stats.mean_positive += s.positive_count;
    stats.mean_flat += s.flat_count;
    stats.max_positive = std::max(stats.max_positive, s.positive_count);
    stats.min_flat = std::min(stats.min_flat, s.flat_count);
    stats.max_flat = std::max(stats.max_flat, s.flat_count);
    if (s.positive_count > 0 || s.flat_count > 0) ++stats.with_flat_or_positive;
    stats.mean_max_kappa += s.max_kappa;
    stats.mean_min_kappa += s.min_kappa;
    widths.push_back(s.width);
  }
  const double n = static_cast<double>(group.size());
  stats.mean_positive /= n;
  stats.mean_flat /= n;
  stats.mean_max_kappa /= n;
  stats.mean_min_kappa /= n;
  std::sort(widths.begin(), widths.end());
  stats.median_width = widths[widths.size() / 2];
  return stats;
}

}  // namespace

absl::StatusOr<ToyExperimentResult> RunToyExperiment(const std::string& model_directory,
                                                     const ToyExperimentOptions& options) {
  ASSIGN_OR_RETURN(const std::shared_ptr<const DiffusionNetwork> checkpoint,
                   LoadModel(model_directory));
  const std::vector<int64_t> shape(checkpoint->config().sample_shape().begin(),
                                   checkpoint->config().sample_shape().end());
  ASSIGN_OR_RETURN(
      const ReferenceSet reference,
      ReferenceSet::Load(
          (std::filesystem::path(model_directory) / ReferenceSet::kFileName).string(), shape));
  Denoiser denoiser(checkpoint);
  std::vector<uint64_t> seeds(options.samples);
  for (int64_t i = 0; i < options.samples; ++i) seeds[i] = options.seed + static_cast<uint64_t>(i);
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(std::vector<SampleCurvature> measured,
                   MeasureSamples(denoiser, seeds, at::Tensor(), options.measure, &reference));
  ToyExperimentResult result;
  result.seconds_sampling_and_curvature =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.samples = std::move(measured);
  const Spectrum& first = result.samples.front().spectra.front();
  result.t = first.t;
  result.sigma = first.sigma;
  result.dimension = first.summary.dimension;
  std::vector<const SampleCurvature*> copies, single_copies, others;
  for (const SampleCurvature& sample : result.samples) {
    const NearestNeighbor& truth = *sample.truth;
    if (!truth.is_copy()) {
      others.push_back(&sample);
    } else {
      (truth.multiplicity > 1 ? copies : single_copies).push_back(&sample);
    }
  }
  result.copies = Summarize("copies of a duplicated point", copies);
  result.single_point_copies = Summarize("d1/d2 < 1/3 to a single point", single_copies);
  result.others = Summarize("others (d1/d2 >= 1/3)", others);
  return result;
}

std::string FormatToyTable(const ToyExperimentResult& result) {
  std::string table = absl::StrFormat(
      "Spectrum at t = %d (sigma_t = %.4f), d = %d; kappa = sigma_t^2 * Re(lambda)\n\n"
      "| group | samples | n+ mean (max) | flat mean [min, max] | with flat or n+>0 | "
      "mean kappa_max | mean kappa_min | median width |\n"
      "|---|---|---|---|---|---|---|---|\n",
      result.t, result.sigma, result.dimension);
  for (const GroupStats* g : {&result.copies, &result.single_point_copies, &result.others}) {
    if (g->count == 0) {
      absl::StrAppendFormat(&table, "| %s | 0 | - | - | - | - | - | - |\n", g->name);
      continue;
    }
    absl::StrAppendFormat(
        &table, "| %s | %d | %.2f (%d) | %.2f [%d, %d] | %d/%d | %.3f | %.3f | %s |\n", g->name,
        g->count, g->mean_positive, g->max_positive, g->mean_flat, g->min_flat, g->max_flat,
        g->with_flat_or_positive, g->count, g->mean_max_kappa, g->mean_min_kappa,
        std::isinf(g->median_width) ? std::string("inf")
                                    : absl::StrFormat("%.4f", g->median_width));
  }
  return table;
}

}  // namespace memaudit::toy
