// A small convolutional ε-model for image- and latent-shaped samples
// ([C, H, W]), e.g. Stable Diffusion's 4×64×64 latent (d = 16,384): used to
// exercise and benchmark the matrix-free path at realistic dimensions.
#ifndef MEMAUDIT_TOOLS_TOY_CONV_NET_H_
#define MEMAUDIT_TOOLS_TOY_CONV_NET_H_

#include <torch/csrc/jit/api/module.h>

#include <cstdint>

namespace memaudit::toy {

struct ConvNetOptions {
  int64_t channels = 4;  // C
  int64_t width = 32;    // hidden channels
  int64_t time_frequencies = 16;
  // > 0: class-conditional on labels 0..classes − 1, `classes` being the
  // null class (classifier-free guidance), by a learned bias per class
  // added with the time embedding.
  int64_t classes = 0;
};

// forward(x: [B, C, H, W], t: [B]) -> [B, C, H, W] (with classes:
// forward(x, t, c: int64 [B])): three 3×3 convolutions with SiLU and a
// sinusoidal time embedding (and the class's bias) added after the first;
// float32 parameters initialized from `seed` (PyTorch's default init).
torch::jit::Module BuildConvNet(const ConvNetOptions& options, uint64_t seed);

}  // namespace memaudit::toy

#endif  // MEMAUDIT_TOOLS_TOY_CONV_NET_H_
