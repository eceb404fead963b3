#include "core/spectra/spectrum.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/runtime/torch_runtime.h"

namespace memaudit {

const char* SpectrumMethodName(SpectrumMethod method) {
  switch (method) {
    case SpectrumMethod::kAuto:
      return "auto";
    case SpectrumMethod::kDense:
      return "dense";
    case SpectrumMethod::kArnoldi:
      return "arnoldi";
  }
  return "unknown";
}

SpectrumMethod ResolveSpectrumMethod(SpectrumMethod method, int64_t dimension,
                                     int64_t max_dense_dimension) {
  if (method != SpectrumMethod::kAuto) return method;
  return dimension > max_dense_dimension ? SpectrumMethod::kArnoldi : SpectrumMethod::kDense;
}

SpectrumSummary Summarize(const std::vector<std::complex<double>>& eigenvalues, double sigma,
                          double sqrt_alpha_bar, const SpectrumOptions& options, bool partial,
                          int64_t full_dimension, double max_magnitude_of_matrix) {
  SpectrumSummary summary;
  summary.partial = partial;
  summary.dimension = static_cast<int64_t>(eigenvalues.size());
  if (eigenvalues.empty()) return summary;
  double max_magnitude = 0.0;
  for (const auto& lambda : eigenvalues) max_magnitude = std::max(max_magnitude, std::abs(lambda));
  if (partial) {
    max_magnitude = std::max(max_magnitude, max_magnitude_of_matrix > 0 ? max_magnitude_of_matrix
                                                                        : 1.0 / (sigma * sigma));
  }
  const double positive_threshold = options.positive_tolerance * max_magnitude;
  const double sigma_squared = sigma * sigma;
  summary.min_kappa = std::numeric_limits<double>::infinity();
  summary.max_kappa = -std::numeric_limits<double>::infinity();
  double kappa_sum = 0.0;
  for (const auto& lambda : eigenvalues) {
    const double kappa = sigma_squared * lambda.real();
    if (lambda.real() > positive_threshold) ++summary.positive_count;
    if (kappa > kFlatKappa) ++summary.flat_count;
    summary.min_kappa = std::min(summary.min_kappa, kappa);
    summary.max_kappa = std::max(summary.max_kappa, kappa);
    kappa_sum += kappa;
  }
  summary.mean_kappa = kappa_sum / static_cast<double>(eigenvalues.size());
  summary.flat_count_is_lower_bound = partial && summary.flat_count == summary.dimension;
  const double data_per_noise = (sigma / sqrt_alpha_bar) * (sigma / sqrt_alpha_bar);
  // Variance of the implied local Gaussian along a direction of curvature κ.
  const auto variance = [&](double kappa) {
    return data_per_noise * std::max(0.0, -1.0 / kappa - 1.0);
  };
  if (summary.max_kappa < 0.0) {
    summary.width = std::sqrt(variance(summary.max_kappa));
    double total = 0.0;
    for (const auto& lambda : eigenvalues) total += variance(sigma_squared * lambda.real());
    const int64_t unseen =
        std::max<int64_t>(0, full_dimension - static_cast<int64_t>(eigenvalues.size()));
    if (partial) total += static_cast<double>(unseen) * variance(summary.min_kappa);
    summary.radius = std::sqrt(total);
    const double dimension = static_cast<double>(
        std::max<int64_t>(full_dimension, static_cast<int64_t>(eigenvalues.size())));
    summary.noise_radius = std::sqrt(total / (data_per_noise * dimension));
  } else {
    summary.noise_radius = std::numeric_limits<double>::infinity();
    summary.width = std::numeric_limits<double>::infinity();
    summary.radius = std::numeric_limits<double>::infinity();
  }
  return summary;
}

absl::StatusOr<std::vector<Spectrum>> DenseSpectra(const at::Tensor& jacobians, int64_t t,
                                                   const NoiseSchedule& schedule,
                                                   const SpectrumOptions& options,
                                                   const StopCheck& stop) {
  if (jacobians.dim() != 3 || jacobians.size(1) != jacobians.size(2)) {
    return absl::InvalidArgumentError("jacobians: expected a [B, d, d] tensor");
  }
  if (t < 0 || t >= schedule.num_train_timesteps()) {
    return absl::InvalidArgumentError("t: outside the schedule");
  }
  std::vector<Spectrum> spectra;
  spectra.reserve(jacobians.size(0));
  try {
    c10::NoGradGuard no_grad;
    for (int64_t b = 0; b < jacobians.size(0); ++b) {
      RETURN_IF_ERROR(CheckStop(stop));
      at::Tensor matrix = jacobians[b].to(at::kCPU, at::kDouble);
      if (!at::isfinite(matrix).all().item<bool>()) {
        return absl::InternalError("the curvature matrix holds non-finite values");
      }
      Spectrum spectrum;
      spectrum.t = t;
      spectrum.sigma = schedule.sigma(t);
      spectrum.sqrt_alpha_bar = schedule.sqrt_alpha_bar(t);
      spectrum.symmetrized = options.symmetrize;
      if (options.symmetrize) {
        at::Tensor values = at::linalg_eigvalsh(0.5 * (matrix + matrix.t()), "L").contiguous();
        const double* data = values.data_ptr<double>();
        for (int64_t i = 0; i < values.numel(); ++i)
          spectrum.eigenvalues.emplace_back(data[i], 0.0);
      } else {
        at::Tensor values = at::linalg_eigvals(matrix).contiguous();
        const auto* data = values.data_ptr<c10::complex<double>>();
        for (int64_t i = 0; i < values.numel(); ++i) {
          spectrum.eigenvalues.emplace_back(data[i].real(), data[i].imag());
        }
      }
      std::sort(spectrum.eigenvalues.begin(), spectrum.eigenvalues.end(),
                [](const auto& a, const auto& b) {
                  return a.real() != b.real() ? a.real() > b.real() : a.imag() > b.imag();
                });
      spectrum.summary =
          Summarize(spectrum.eigenvalues, spectrum.sigma, spectrum.sqrt_alpha_bar, options);
      spectra.push_back(std::move(spectrum));
    }
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInternal, "eigenvalue solve failed", e);
  }
  return spectra;
}

}  // namespace memaudit
