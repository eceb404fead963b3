#include "tools/toy/gaussian_mixture.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/runtime/torch_runtime.h"

namespace memaudit::toy {
namespace {

// The exact noised-mixture model. Buffers are float64 and cast to the input's
// dtype, so the same archive serves float32 and float64 evaluation.
//   basis[k]       eigenvectors (columns) of Σ_k
//   eigenvalues[k] eigenvalues of Σ_k
// S_k = ᾱΣ_k + σ²I = basis diag(ᾱλ + σ²) basisᵀ, so S_k⁻¹ and log det S_k
// need no matrix inverse, and every op has forward- and double-backward AD.
constexpr const char* kMixtureSource = R"JIT(
def exact_output(self, x: Tensor, t: Tensor, allowed: Tensor) -> Tensor:
    batch = x.shape[0]
    dtype = x.dtype
    flat = x.reshape([batch, -1])
    alpha_bar = self.alpha_bars.to(dtype).index_select(0, t)
    variance = 1.0 - alpha_bar
    root_alpha_bar = torch.sqrt(alpha_bar)
    sigma = torch.sqrt(variance)
    basis = self.basis.to(dtype)
    means = self.means.to(dtype)
    diff = flat.unsqueeze(1) - root_alpha_bar.view([batch, 1, 1]) * means.unsqueeze(0)
    coords = torch.matmul(diff.unsqueeze(2), basis.unsqueeze(0)).squeeze(2)
    scale = alpha_bar.view([batch, 1, 1]) * self.eigenvalues.to(dtype).unsqueeze(0) + variance.view([batch, 1, 1])
    scaled = coords / scale
    mahalanobis = (coords * scaled).sum(2)
    log_det = torch.log(scale).sum(2)
    logits = self.log_weights.to(dtype).unsqueeze(0) - 0.5 * (mahalanobis + log_det)
    logits = logits.masked_fill(torch.logical_not(allowed), float("-inf"))
    responsibilities = torch.softmax(logits, 1)
    gradients = torch.matmul(scaled.unsqueeze(2), basis.transpose(1, 2).unsqueeze(0)).squeeze(2)
    score = -(responsibilities.unsqueeze(2) * gradients).sum(1)
    epsilon = -sigma.view([batch, 1]) * score
    out = epsilon
    if self.prediction == 4:
        out = score
    elif self.prediction == 2:
        out = (epsilon - sigma.view([batch, 1]) * flat) / root_alpha_bar.view([batch, 1])
    elif self.prediction == 3:
        out = (flat - sigma.view([batch, 1]) * epsilon) / root_alpha_bar.view([batch, 1])
    return out.reshape(x.shape)
)JIT";

constexpr const char* kUnconditionalForward = R"JIT(
def forward(self, x: Tensor, t: Tensor) -> Tensor:
    # Every component (t >= 0 always holds; a bool tensor on x's device).
    allowed = t.unsqueeze(1).expand([-1, self.log_weights.shape[0]]) >= 0
    return self.exact_output(x, t, allowed)
)JIT";

constexpr const char* kClassForward = R"JIT(
def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
    same_class = self.classes.unsqueeze(0) == y.unsqueeze(1)
    everything = (y == self.num_classes).unsqueeze(1)
    return self.exact_output(x, t, torch.logical_or(same_class, everything))
)JIT";

constexpr const char* kEmbeddingForward = R"JIT(
def forward(self, x: Tensor, t: Tensor, c: Tensor) -> Tensor:
    chosen = c.index_select(1, self.classes) > 0.5
    everything = (c.abs().sum(1) == 0).unsqueeze(1)
    return self.exact_output(x, t, torch.logical_or(chosen, everything))
)JIT";

}  // namespace

GaussianMixture RandomGaussianMixture(int64_t dim, int64_t components, uint64_t seed,
                                      int64_t num_classes) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  GaussianMixture mixture;
  mixture.weights = at::rand({components}, generator, f64) + 0.5;
  mixture.means = 2.0 * at::randn({components, dim}, generator, f64);
  std::vector<at::Tensor> covariances;
  for (int64_t k = 0; k < components; ++k) {
    at::Tensor q = std::get<0>(at::linalg_qr(at::randn({dim, dim}, generator, f64)));
    at::Tensor eigenvalues = 0.05 + 1.45 * at::rand({dim}, generator, f64);
    if (dim > 1 && k % 2 == 1) eigenvalues[0] = 0.0;  // a degenerate (manifold) direction
    covariances.push_back(at::matmul(q * eigenvalues.unsqueeze(0), q.t()));
  }
  mixture.covariances = at::stack(covariances);
  if (num_classes > 0) mixture.classes = at::arange(components, at::kLong).remainder(num_classes);
  return mixture;
}

GaussianMixture EmpiricalMixture(const at::Tensor& points, double variance) {
  const int64_t n = points.size(0);
  const int64_t dim = points.numel() / n;
  GaussianMixture mixture;
  mixture.weights = at::ones({n}, at::kDouble);
  mixture.means = points.reshape({n, dim}).to(at::kDouble);
  mixture.covariances = variance * at::eye(dim, at::kDouble).expand({n, dim, dim}).contiguous();
  return mixture;
}

absl::StatusOr<torch::jit::Module> BuildGaussianMixtureModule(const GaussianMixture& mixture,
                                                              const NoiseSchedule& schedule,
                                                              v1::PredictionType prediction,
                                                              int64_t num_classes,
                                                              MixtureConditioning conditioning) {
  const int64_t k = mixture.size();
  const int64_t dim = mixture.dim();
  if (k < 1 || mixture.weights.numel() != k ||
      mixture.covariances.sizes() != at::IntArrayRef({k, dim, dim})) {
    return absl::InvalidArgumentError("mixture: inconsistent component shapes");
  }
  if (mixture.classes.defined() && num_classes < 1) {
    return absl::InvalidArgumentError("mixture: classes given but num_classes < 1");
  }
  try {
    const at::Tensor covariances = mixture.covariances.to(at::kDouble);
    auto [eigenvalues, basis] = at::linalg_eigh(0.5 * (covariances + covariances.transpose(1, 2)));
    torch::jit::Module module("__torch__.memaudit.ExactGaussianMixture");
    const at::Tensor weights = mixture.weights.to(at::kDouble);
    module.register_buffer("log_weights", (weights / weights.sum()).log());
    module.register_buffer("means", mixture.means.to(at::kDouble).contiguous());
    module.register_buffer("basis", basis.contiguous());
    module.register_buffer("eigenvalues", eigenvalues.clamp_min(0.0).contiguous());
    module.register_buffer("alpha_bars",
                           at::tensor(at::ArrayRef<double>(schedule.alpha_bars()), at::kDouble));
    module.register_attribute("prediction", c10::IntType::get(), static_cast<int64_t>(prediction));
    module.define(kMixtureSource);
    if (mixture.classes.defined()) {
      module.register_buffer("classes", mixture.classes.to(at::kLong));
      module.register_attribute("num_classes", c10::IntType::get(), num_classes);
      module.define(conditioning == MixtureConditioning::kEmbedding ? kEmbeddingForward
                                                                    : kClassForward);
    } else {
      module.define(kUnconditionalForward);
    }
    module.eval();
    return module;
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInternal, "building the mixture module failed", e);
  }
}

}  // namespace memaudit::toy
