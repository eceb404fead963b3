// Memory of a CUDA device as LibTorch's caching allocator and the CUDA
// driver report it: for the device-memory metrics and for admission (a
// request whose estimate exceeds what the device has left is refused before
// it starts, not failed half-way by an out-of-memory error).
//
// Builds against a CPU-only LibTorch (Debian's) have no CUDA code:
// QueryCudaMemory then says UNIMPLEMENTED. The CUDA branch is compiled only
// with a CUDA LibTorch (the Dockerfile's LIBTORCH_VARIANT=cuda; CMake
// defines MEMAUDIT_WITH_CUDA when TorchConfig finds libc10_cuda).
// Thread-safe.
#ifndef MEMAUDIT_CORE_DEVICE_DEVICE_MEMORY_H_
#define MEMAUDIT_CORE_DEVICE_DEVICE_MEMORY_H_

#include <torch/types.h>

#include <cstdint>

#include "absl/status/statusor.h"

namespace memaudit {

// Bytes.
struct CudaMemory {
  int64_t allocated = 0;       // in live tensors of this process
  int64_t reserved = 0;        // held by the caching allocator (allocated + cached)
  int64_t peak_allocated = 0;  // highest `allocated` since the process started
  int64_t free = 0;            // free on the device, all processes (driver)
  int64_t total = 0;           // the device's memory
  // What a new request can still get: the driver's free memory plus what
  // the allocator has cached but not handed out.
  int64_t available() const { return free + reserved - allocated; }
};

// True when this build can run on CUDA devices.
bool BuiltWithCuda();

// The figures of `device`. INVALID_ARGUMENT for a device that is not CUDA,
// UNIMPLEMENTED in a build without CUDA, INTERNAL for a CUDA error.
absl::StatusOr<CudaMemory> QueryCudaMemory(const torch::Device& device);

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_DEVICE_DEVICE_MEMORY_H_
