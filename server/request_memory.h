// Memory a planned request will hold at its peak, estimated before any work
// starts, and the limit it is checked against (--max_request_memory_mib).
//
// What is counted: sampling states (kept steps × batch × d), the batch's
// working tensors, dense Jacobians and the eigen-solver's double-precision
// copies, Arnoldi bases, JVP chunks, and the network's own activations for
// the largest call the request makes (LoadedModel::footprint, measured when
// the model loads, linear in the call's rows). What is not: the loaded
// models themselves, and buffers of LibTorch's intra-op worker threads.
#ifndef MEMAUDIT_SERVER_REQUEST_MEMORY_H_
#define MEMAUDIT_SERVER_REQUEST_MEMORY_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/plans.h"

namespace memaudit::server {

struct MemoryEstimate {
  struct Part {
    std::string name;  // "states", "Jacobians", ...
    int64_t bytes = 0;
  };
  int64_t bytes = 0;        // the sum of the parts (saturating)
  std::vector<Part> parts;  // each > 0
  // The bytes of part `name`; 0 when absent.
  int64_t PartBytes(const std::string& name) const;
  // "states 12 MiB + Jacobians 40 MiB"
  std::string Breakdown() const;
};

MemoryEstimate EstimateAudit(const AuditPlan& plan);
MemoryEstimate EstimateCalibration(const CalibrationPlan& plan);
MemoryEstimate EstimateSpectrum(const SpectrumPlan& plan);
// `batch`: seeds sampled together (all of them for Sample, a streaming
// batch for StreamSamples).
MemoryEstimate EstimateSample(const SamplePlan& plan, int64_t batch);
MemoryEstimate EstimateEarlyMetrics(const EarlyMetricsPlan& plan);
// `batch`: seeds guarded, sampled and judged together.
MemoryEstimate EstimateMitigate(const MitigatePlan& plan, int64_t batch);

// OK when `estimate` fits in `limit_bytes` (0: no limit); otherwise
// RESOURCE_EXHAUSTED with both numbers, the breakdown and what to lower.
absl::Status CheckRequestMemory(const MemoryEstimate& estimate, int64_t limit_bytes,
                                const std::string& what);

// Memory left on the device the models run on, when it is a CUDA device.
struct DeviceMemoryLeft {
  std::string device;     // "cuda:0"
  int64_t available = 0;  // what a request can still get (CudaMemory::available)
  int64_t total = 0;      // the device's memory
};

// What one request may hold: the per-request limit (--max_request_memory_mib)
// and, on a CUDA device, what is left on it at the time of the check (the
// request's tensors live there). Copyable; thread-safe.
class MemoryBudget {
 public:
  // `device_left` (may be empty) is asked at every check; nullopt: not a
  // CUDA device, or its memory cannot be read (then only the limit holds).
  explicit MemoryBudget(int64_t limit_bytes = 0,
                        std::function<std::optional<DeviceMemoryLeft>()> device_left = {});
  // The budget of a server whose models run on `device` ("cpu", "cuda:1").
  static MemoryBudget ForDevice(int64_t limit_bytes, const std::string& device);

  // CheckRequestMemory against the limit, then RESOURCE_EXHAUSTED when the
  // estimate exceeds what the device has left, with both numbers.
  absl::Status Check(const MemoryEstimate& estimate, const std::string& what) const;
  int64_t limit_bytes() const { return limit_bytes_; }

 private:
  int64_t limit_bytes_;
  std::function<std::optional<DeviceMemoryLeft>()> device_left_;
};

// The default --max_request_memory_mib: half of the memory this process may
// use (the smaller of physical memory and the cgroup's memory.max), so that
// a request that passes leaves room for the models and a second request.
int64_t DefaultRequestMemoryLimitBytes();

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_REQUEST_MEMORY_H_
