// A small class-conditional ε-prediction U-Net for 1×28×28 digits, built as
// a TorchScript module in C++ (forward(x, t, y), y == num_classes is the
// null class for classifier-free guidance).
#ifndef MEMAUDIT_TOOLS_MNIST_UNET_H_
#define MEMAUDIT_TOOLS_MNIST_UNET_H_

#include <torch/csrc/jit/api/module.h>

#include <cstdint>

namespace memaudit::mnist {

struct UNetOptions {
  int64_t channels = 32;  // C at 28×28; 2C at 14×14 and 7×7
  int64_t embedding = 64;
  int64_t num_classes = 10;
  int64_t time_frequencies = 16;
};

// 28×28 (C) → 14×14 (2C) → 7×7 (2C) and back with skip connections; each
// level has a residual block whose first conv receives the time + class
// embedding as a per-channel bias; GroupNorm(8) and SiLU. Parameters are
// float32, initialized from `seed`.
torch::jit::Module BuildUNet(const UNetOptions& options, uint64_t seed);

}  // namespace memaudit::mnist

#endif  // MEMAUDIT_TOOLS_MNIST_UNET_H_
