// The memory a denoiser network allocates while it runs, per batch row,
// measured once when a model loads, so that request estimates
// (server/request_memory.h) count the network's activations and not only
// the engine's own tensors.
//
// Measured through LibTorch's memory-profiling hook (the thread-local
// c10::MemoryReportingInfoBase that the autograd profiler's profile_memory
// uses): LibTorch's CPU allocator and CUDA's caching allocator report every
// allocation and free to it. What the calling thread allocates is counted;
// buffers of intra-op worker threads are not seen, and a tensor freed on
// another thread stays counted (so peaks err high).
#ifndef MEMAUDIT_CORE_CHECKPOINT_NETWORK_FOOTPRINT_H_
#define MEMAUDIT_CORE_CHECKPOINT_NETWORK_FOOTPRINT_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace memaudit {

class DiffusionNetwork;

// Peak net bytes LibTorch allocates on the calling thread while the meter
// lives. One meter per thread at a time (a nested meter hides the outer one
// for its lifetime). Not thread-safe; create, run the work, read.
class AllocationMeter {
 public:
  AllocationMeter();
  ~AllocationMeter();
  AllocationMeter(const AllocationMeter&) = delete;
  AllocationMeter& operator=(const AllocationMeter&) = delete;

  // The highest of (bytes allocated − bytes freed) since construction.
  int64_t peak_bytes() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Bytes the network allocates for a call on `rows` rows: fixed + per_row ×
// rows, the line through the peaks measured at 1 and 2 rows (per_row = the
// 2-row peak minus the 1-row peak, fixed = the 1-row peak minus per_row;
// neither below 0).
struct NetworkFootprint {
  // A forward pass without gradients (sampling steps).
  int64_t inference_fixed = 0;
  int64_t inference_per_row = 0;
  // A forward pass that keeps its graph plus one vector-Jacobian product
  // through it (spectra, guards, gradient-based early metrics).
  int64_t gradient_fixed = 0;
  int64_t gradient_per_row = 0;

  int64_t InferenceBytes(int64_t rows) const;
  int64_t GradientBytes(int64_t rows) const;
};

// Runs `network` at 1 and 2 rows (zero inputs, a middle timestep, class 0 or
// a zero embedding), without and with gradients, under an AllocationMeter.
// INTERNAL naming `model_path` (the file the network came from) when the
// network throws (the load probe has already run it once).
absl::StatusOr<NetworkFootprint> MeasureNetworkFootprint(const DiffusionNetwork& network,
                                                         const std::string& model_path);

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_CHECKPOINT_NETWORK_FOOTPRINT_H_
