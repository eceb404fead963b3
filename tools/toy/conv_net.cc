#include "tools/toy/conv_net.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

namespace memaudit::toy {
namespace {

constexpr const char* kConvSource = R"JIT(
def forward(self, x: Tensor, t: Tensor) -> Tensor:
    phase = t.to(x.dtype).unsqueeze(1) * self.frequencies.to(x.dtype).unsqueeze(0)
    embedding = torch.cat([torch.sin(phase), torch.cos(phase)], 1)
    time_bias = torch.matmul(embedding, self.time_weight.t())
    h = torch.conv2d(x, self.weight1, self.bias1, 1, 1)
    h = torch.silu(h + time_bias.unsqueeze(2).unsqueeze(3))
    h = torch.silu(torch.conv2d(h, self.weight2, self.bias2, 1, 1))
    return torch.conv2d(h, self.weight3, self.bias3, 1, 1)
)JIT";

// The same with a class bias (a row of class_weight per label).
constexpr const char* kConditionalConvSource = R"JIT(
def forward(self, x: Tensor, t: Tensor, c: Tensor) -> Tensor:
    phase = t.to(x.dtype).unsqueeze(1) * self.frequencies.to(x.dtype).unsqueeze(0)
    embedding = torch.cat([torch.sin(phase), torch.cos(phase)], 1)
    bias = torch.matmul(embedding, self.time_weight.t()) + self.class_weight.to(x.dtype)[c]
    h = torch.conv2d(x, self.weight1, self.bias1, 1, 1)
    h = torch.silu(h + bias.unsqueeze(2).unsqueeze(3))
    h = torch.silu(torch.conv2d(h, self.weight2, self.bias2, 1, 1))
    return torch.conv2d(h, self.weight3, self.bias3, 1, 1)
)JIT";

at::Tensor Uniform(std::vector<int64_t> shape, double bound, at::Generator& gen) {
  return (at::rand(shape, gen, at::kFloat) * 2.0 - 1.0) * bound;
}

}  // namespace

torch::jit::Module BuildConvNet(const ConvNetOptions& options, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  torch::jit::Module module("__torch__.memaudit.ToyConvNet");
  at::Tensor exponents = at::arange(options.time_frequencies, at::kFloat) /
                         std::max<int64_t>(1, options.time_frequencies - 1);
  module.register_buffer("frequencies", at::pow(1000.0, -exponents));
  const int64_t c = options.channels, w = options.width;
  auto conv = [&](const char* weight, const char* bias, int64_t in, int64_t out) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in * 9));
    module.register_parameter(weight, Uniform({out, in, 3, 3}, bound, gen), false);
    module.register_parameter(bias, Uniform({out}, bound, gen), false);
  };
  conv("weight1", "bias1", c, w);
  conv("weight2", "bias2", w, w);
  conv("weight3", "bias3", w, c);
  module.register_parameter(
      "time_weight",
      Uniform({w, 2 * options.time_frequencies},
              1.0 / std::sqrt(static_cast<double>(2 * options.time_frequencies)), gen),
      false);
  if (options.classes > 0) {
    module.register_parameter("class_weight", Uniform({options.classes + 1, w}, 1.0, gen), false);
    module.define(kConditionalConvSource);
  } else {
    module.define(kConvSource);
  }
  module.eval();
  return module;
}

}  // namespace memaudit::toy
