#include "core/model/network_footprint.h"

#include <ATen/ATen.h>
#include <c10/core/Allocator.h>
#include <c10/core/GradMode.h>
#include <c10/util/ThreadLocalDebugInfo.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/model/diffusion_network.h"
#include "core/runtime/torch_runtime.h"

namespace memaudit {
namespace {

// Receives LibTorch's allocation reports for the thread that installed it.
class Counter : public c10::MemoryReportingInfoBase {
 public:
  // LibTorch 1.13 passes the pool totals as int64_t, 2.x as size_t: one of
  // the two overrides the hook, the other is never called.
  void reportMemoryUsage(void* /*ptr*/, int64_t bytes, int64_t /*total_allocated*/,
                         int64_t /*total_reserved*/, c10::Device /*device*/) {
    Add(bytes);
  }
  void reportMemoryUsage(void* /*ptr*/, int64_t bytes, size_t /*total_allocated*/,
                         size_t /*total_reserved*/, c10::Device /*device*/) {
    Add(bytes);
  }
  bool memoryProfilingEnabled() const override { return true; }

  int64_t peak() const { return peak_; }

 private:
  void Add(int64_t bytes) {
    current_ += bytes;
    peak_ = std::max(peak_, current_);
  }
  int64_t current_ = 0;
  int64_t peak_ = 0;
};

// The row count of the measurements; the footprint is linear between them.
constexpr int64_t kRowsSmall = 1;
constexpr int64_t kRowsLarge = 2;

struct Inputs {
  at::Tensor x, t, condition;
};

Inputs MakeInputs(const DiffusionNetwork& network, int64_t rows) {
  const auto options = at::TensorOptions().device(network.device());
  Inputs inputs;
  inputs.x = at::zeros(network.BatchShape(rows), options.dtype(network.dtype()));
  inputs.t =
      at::full({rows}, network.schedule().num_train_timesteps() / 2, options.dtype(at::kLong));
  const v1::Conditioning& conditioning = network.config().conditioning();
  switch (conditioning.kind()) {
    case v1::Conditioning::CLASS_LABEL:
      inputs.condition = at::zeros({rows}, options.dtype(at::kLong));
      break;
    case v1::Conditioning::EMBEDDING: {
      std::vector<int64_t> shape{rows};
      shape.insert(shape.end(), conditioning.embedding_shape().begin(),
                   conditioning.embedding_shape().end());
      inputs.condition = at::zeros(shape, options.dtype(network.dtype()));
      break;
    }
    default:
      break;
  }
  return inputs;
}

// Peak bytes of one forward pass on `inputs`, and of one with its graph and
// a vector-Jacobian product. The inputs and the cotangent are made before
// the meter starts and freed after it ends.
std::pair<int64_t, int64_t> MeasureAt(const DiffusionNetwork& network, int64_t rows) {
  const Inputs inputs = MakeInputs(network, rows);
  const at::Tensor cotangent = at::ones_like(inputs.x);
  int64_t inference = 0;
  {
    c10::NoGradGuard no_grad;
    AllocationMeter meter;
    { const at::Tensor out = network.Forward(inputs.x, inputs.t, inputs.condition); }
    inference = meter.peak_bytes();
  }
  const at::Tensor x = inputs.x.detach().requires_grad_(true);
  int64_t gradient = 0;
  {
    c10::AutoGradMode grad_mode(true);
    AllocationMeter meter;
    {
      const at::Tensor out = network.Forward(x, inputs.t, inputs.condition);
      const auto grads = torch::autograd::grad({out}, {x}, {cotangent});
    }
    gradient = meter.peak_bytes();
  }
  return {inference, gradient};
}

// fixed + per_row · rows through (kRowsSmall, small) and (kRowsLarge, large).
void Fit(int64_t small, int64_t large, int64_t* fixed, int64_t* per_row) {
  *per_row = std::max<int64_t>(0, (large - small) / (kRowsLarge - kRowsSmall));
  *fixed = std::max<int64_t>(0, small - *per_row * kRowsSmall);
}

int64_t Linear(int64_t fixed, int64_t per_row, int64_t rows) {
  return fixed + per_row * std::max<int64_t>(rows, 0);
}

}  // namespace

struct AllocationMeter::State {
  std::shared_ptr<Counter> counter = std::make_shared<Counter>();
  std::optional<c10::DebugInfoGuard> guard;
};

AllocationMeter::AllocationMeter() : state_(std::make_unique<State>()) {
  state_->guard.emplace(c10::DebugInfoKind::PROFILER_STATE, state_->counter);
}

AllocationMeter::~AllocationMeter() { state_->guard.reset(); }

int64_t AllocationMeter::peak_bytes() const { return state_->counter->peak(); }

int64_t NetworkFootprint::InferenceBytes(int64_t rows) const {
  return Linear(inference_fixed, inference_per_row, rows);
}

int64_t NetworkFootprint::GradientBytes(int64_t rows) const {
  return Linear(gradient_fixed, gradient_per_row, rows);
}

absl::StatusOr<NetworkFootprint> MeasureNetworkFootprint(const DiffusionNetwork& network,
                                                         const std::string& model_path) {
  NetworkFootprint footprint;
  try {
    const auto [inference_small, gradient_small] = MeasureAt(network, kRowsSmall);
    const auto [inference_large, gradient_large] = MeasureAt(network, kRowsLarge);
    Fit(inference_small, inference_large, &footprint.inference_fixed, &footprint.inference_per_row);
    Fit(gradient_small, gradient_large, &footprint.gradient_fixed, &footprint.gradient_per_row);
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInternal,
                      absl::StrCat(model_path, ": measuring the network's memory"), e);
  }
  return footprint;
}

}  // namespace memaudit
