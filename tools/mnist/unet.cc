#include "tools/mnist/unet.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace memaudit::mnist {
namespace {

// Residual block "NAME": GN → SiLU → conv (+ embedding bias) → GN → SiLU →
// conv, plus the input.
std::string BlockSource(const std::string& name) {
  return absl::StrReplaceAll(R"JIT(
def NAME(self, h: Tensor, cond: Tensor) -> Tensor:
    r = torch.silu(torch.group_norm(h, 8, self.NAME_gn1_w, self.NAME_gn1_b, 1e-5, False))
    r = torch.conv2d(r, self.NAME_conv1_w, self.NAME_conv1_b, 1, 1)
    r = r + torch.matmul(cond, self.NAME_emb_w.t()).unsqueeze(2).unsqueeze(3)
    r = torch.silu(torch.group_norm(r, 8, self.NAME_gn2_w, self.NAME_gn2_b, 1e-5, False))
    r = torch.conv2d(r, self.NAME_conv2_w, self.NAME_conv2_b, 1, 1)
    return h + r
)JIT",
                             {{"NAME", name}});
}

constexpr const char* kForward = R"JIT(
def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
    phase = t.to(x.dtype).unsqueeze(1) * self.frequencies.to(x.dtype).unsqueeze(0)
    time = torch.cat([torch.sin(phase), torch.cos(phase)], 1)
    time = torch.silu(torch.matmul(time, self.time_w.t()) + self.time_b)
    cond = torch.silu(time + self.class_table.index_select(0, y))
    h0 = torch.conv2d(x, self.in_w, self.in_b, 1, 1)
    h1 = self.block1(h0, cond)
    h2 = self.block2(torch.conv2d(h1, self.down1_w, self.down1_b, 2, 1), cond)
    h3 = self.mid(torch.conv2d(h2, self.down2_w, self.down2_b, 2, 1), cond)
    u2 = torch.upsample_nearest2d(h3, [14, 14], None, None)
    u2 = self.block3(torch.conv2d(torch.cat([u2, h2], 1), self.up2_w, self.up2_b, 1, 1), cond)
    u1 = torch.upsample_nearest2d(u2, [28, 28], None, None)
    u1 = self.block4(torch.conv2d(torch.cat([u1, h1], 1), self.up1_w, self.up1_b, 1, 1), cond)
    out = torch.silu(torch.group_norm(u1, 8, self.out_gn_w, self.out_gn_b, 1e-5, False))
    return torch.conv2d(out, self.out_w, self.out_b, 1, 1)
)JIT";

class Initializer {
 public:
  Initializer(torch::jit::Module& module, uint64_t seed)
      : module_(module), gen_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}
  void Conv(const std::string& name, int64_t in, int64_t out, double scale = 1.0) {
    const double bound = scale / std::sqrt(static_cast<double>(in * 9));
    Add(name + "_w", Uniform({out, in, 3, 3}, bound));
    Add(name + "_b", Uniform({out}, bound));
  }
  void Norm(const std::string& name, int64_t channels) {
    Add(name + "_w", at::ones({channels}));
    Add(name + "_b", at::zeros({channels}));
  }
  void Linear(const std::string& weight, int64_t in, int64_t out) {
    Add(weight, Uniform({out, in}, 1.0 / std::sqrt(static_cast<double>(in))));
  }
  void Add(const std::string& name, const at::Tensor& value) {
    module_.register_parameter(name, value, false);
  }
  at::Tensor Uniform(std::vector<int64_t> shape, double bound) {
    return (at::rand(shape, gen_, at::kFloat) * 2.0 - 1.0) * bound;
  }

 private:
  torch::jit::Module& module_;
  at::Generator gen_;
};

}  // namespace

torch::jit::Module BuildUNet(const UNetOptions& options, uint64_t seed) {
  torch::jit::Module module("__torch__.memaudit.MnistUNet");
  Initializer init(module, seed);
  const int64_t c = options.channels, e = options.embedding;
  at::Tensor exponents = at::arange(options.time_frequencies, at::kFloat) /
                         std::max<int64_t>(1, options.time_frequencies - 1);
  module.register_buffer("frequencies", at::pow(1000.0, -exponents));
  init.Linear("time_w", 2 * options.time_frequencies, e);
  init.Add("time_b", at::zeros({e}));
  init.Add("class_table", init.Uniform({options.num_classes + 1, e}, 1.0));
  init.Conv("in", 1, c);
  auto block = [&](const std::string& name, int64_t channels) {
    init.Norm(name + "_gn1", channels);
    init.Conv(name + "_conv1", channels, channels);
    init.Linear(name + "_emb_w", e, channels);
    init.Norm(name + "_gn2", channels);
    init.Conv(name + "_conv2", channels, channels, /*scale=*/0.1);  // near-identity start
    module.define(BlockSource(name));
  };
  block("block1", c);
  init.Conv("down1", c, 2 * c);
  block("block2", 2 * c);
  init.Conv("down2", 2 * c, 2 * c);
  block("mid", 2 * c);
  init.Conv("up2", 4 * c, 2 * c);
  block("block3", 2 * c);
  init.Conv("up1", 3 * c, c);
  block("block4", c);
  init.Norm("out_gn", c);
  init.Conv("out", c, 1, /*scale=*/0.1);
  module.define(kForward);
  module.eval();
  return module;
}

}  // namespace memaudit::mnist
