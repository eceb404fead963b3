#include "tools/toy/toy_mlp.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/optim/adam.h>

#include <chrono>
#include <cmath>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "core/runtime/torch_runtime.h"

namespace memaudit::toy {
namespace {

// PyTorch's default nn.Linear initialization: U(−1/√fan_in, 1/√fan_in).
std::pair<at::Tensor, at::Tensor> LinearParameters(int64_t in, int64_t out, at::Generator& gen) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  at::Tensor weight = (at::rand({out, in}, gen, at::kFloat) * 2.0 - 1.0) * bound;
  at::Tensor bias = (at::rand({out}, gen, at::kFloat) * 2.0 - 1.0) * bound;
  return {weight, bias};
}

}  // namespace

ToyData MakeToyData(const ToyDataOptions& options) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  const int64_t k = std::min(options.intrinsic_dim, options.dim);
  // An orthonormal basis of the cloud's subspace.
  at::Tensor basis = std::get<0>(at::linalg_qr(at::randn({options.dim, k}, gen, at::kDouble)));
  at::Tensor latent = at::randn({options.cloud_points, k}, gen, at::kDouble);
  at::Tensor cloud = at::matmul(latent, basis.t());
  at::Tensor direction = at::randn({k}, gen, at::kDouble);
  direction = direction / direction.norm();
  at::Tensor duplicated = options.duplicate_distance * at::matmul(basis, direction);
  ToyData data;
  data.duplicated = duplicated.to(at::kFloat);
  data.points = at::cat({cloud, duplicated.unsqueeze(0).expand({options.duplicates, options.dim})})
                    .to(at::kFloat)
                    .contiguous();
  return data;
}

torch::jit::Module BuildToyMlp(int64_t dim, const MlpOptions& options, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  torch::jit::Module module("__torch__.memaudit.ToyMlp");
  // Geometric frequencies from 1 down to 1/1000 radians per timestep.
  at::Tensor exponents = at::arange(options.time_frequencies, at::kFloat) /
                         std::max<int64_t>(1, options.time_frequencies - 1);
  module.register_buffer("frequencies", at::pow(1000.0, -exponents));
  std::string source = R"JIT(
def forward(self, x: Tensor, t: Tensor) -> Tensor:
    batch = x.shape[0]
    h = x.reshape([batch, -1])
    phase = t.to(h.dtype).unsqueeze(1) * self.frequencies.to(h.dtype).unsqueeze(0)
    h = torch.cat([h, torch.sin(phase), torch.cos(phase)], 1)
)JIT";
  int64_t in = dim + 2 * options.time_frequencies;
  for (int64_t i = 0; i < options.layers; ++i) {
    auto [weight, bias] = LinearParameters(in, options.hidden, gen);
    module.register_parameter(absl::StrCat("weight", i), weight, false);
    module.register_parameter(absl::StrCat("bias", i), bias, false);
    absl::StrAppend(&source, "    h = torch.silu(torch.matmul(h, self.weight", i,
                    ".t()) + self.bias", i, ")\n");
    in = options.hidden;
  }
  auto [out_weight, out_bias] = LinearParameters(in, dim, gen);
  // A small output layer: the untrained model predicts ε̂ ≈ 0.
  module.register_parameter("out_weight", out_weight * 0.1, false);
  module.register_parameter("out_bias", out_bias * 0.0, false);
  absl::StrAppend(&source,
                  "    out = torch.matmul(h, self.out_weight.t()) + self.out_bias\n"
                  "    return out.reshape(x.shape)\n");
  module.define(source);
  return module;
}

absl::StatusOr<TrainReport> TrainEpsilonModel(torch::jit::Module& module, const at::Tensor& data,
                                              const NoiseSchedule& schedule,
                                              const TrainOptions& options,
                                              const std::function<void(int64_t, double)>& log,
                                              const at::Tensor& labels) {
  if (data.dim() < 2 || data.size(0) < 1) {
    return absl::InvalidArgumentError("training data must be [N, *sample_shape]");
  }
  ConfigureTorchKernels();
  const auto start = std::chrono::steady_clock::now();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  std::vector<at::Tensor> parameters;
  for (at::Tensor p : module.parameters()) parameters.push_back(p.requires_grad_(true));
  torch::optim::Adam optimizer(parameters, torch::optim::AdamOptions(options.learning_rate));
  const at::Tensor alpha_bars =
      at::tensor(at::ArrayRef<double>(schedule.alpha_bars()), at::kDouble).to(at::kFloat);
  const int64_t n = data.size(0);
  std::vector<int64_t> view_shape(data.dim(), 1);
  view_shape[0] = options.batch_size;
  module.train();
  double tail_loss = 0.0;
  int64_t tail_count = 0;
  const int64_t tail_start = options.steps - std::max<int64_t>(1, options.steps / 20);
  try {
    for (int64_t step = 0; step < options.steps; ++step) {
      const double progress = static_cast<double>(step) / options.steps;
      const double lr = options.learning_rate * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
      for (auto& group : optimizer.param_groups()) {
        static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
      }
      at::Tensor index = at::randint(n, {options.batch_size}, gen, at::kLong);
      at::Tensor x0 = data.index_select(0, index);
      at::Tensor t =
          at::randint(schedule.num_train_timesteps(), {options.batch_size}, gen, at::kLong);
      at::Tensor noise = at::randn(x0.sizes(), gen, at::kFloat);
      at::Tensor alpha_bar = alpha_bars.index_select(0, t).view(view_shape);
      at::Tensor xt = alpha_bar.sqrt() * x0 + (1.0 - alpha_bar).sqrt() * noise;
      std::vector<c10::IValue> inputs{xt, t};
      if (labels.defined()) {
        at::Tensor y = labels.index_select(0, index);
        at::Tensor drop =
            at::rand({options.batch_size}, gen, at::kFloat) < options.condition_dropout;
        inputs.emplace_back(y.masked_fill(drop, options.null_label));
      }
      at::Tensor prediction = module.forward(inputs).toTensor();
      at::Tensor loss = (prediction - noise).pow(2).mean();
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
      const double value = loss.item<double>();
      if (step >= tail_start) {
        tail_loss += value;
        ++tail_count;
      }
      if (log && (step % 500 == 0 || step + 1 == options.steps)) log(step, value);
    }
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInternal, "training failed", e);
  }
  module.eval();
  for (at::Tensor p : module.parameters()) p.requires_grad_(false);
  TrainReport report;
  report.final_loss = tail_loss / std::max<int64_t>(1, tail_count);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace memaudit::toy
