#include "core/model/diffusion_network.h"

namespace memaudit {

int64_t DiffusionNetwork::sample_numel() const {
  int64_t numel = 1;
  for (int64_t size : config().sample_shape()) numel *= size;
  return numel;
}

std::vector<int64_t> DiffusionNetwork::BatchShape(int64_t batch) const {
  std::vector<int64_t> shape{batch};
  shape.insert(shape.end(), config().sample_shape().begin(), config().sample_shape().end());
  return shape;
}

bool DiffusionNetwork::conditional() const {
  return config().conditioning().kind() != v1::Conditioning::NONE;
}

}  // namespace memaudit
