#include "core/device/device_memory.h"

#include "absl/strings/str_cat.h"

#ifdef MEMAUDIT_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#endif

namespace memaudit {

bool BuiltWithCuda() {
#ifdef MEMAUDIT_WITH_CUDA
  return true;
#else
  return false;
#endif
}

absl::StatusOr<CudaMemory> QueryCudaMemory(const torch::Device& device) {
  if (!device.is_cuda()) {
    return absl::InvalidArgumentError(
        absl::StrCat("device ", device.str(), " is not a CUDA device"));
  }
#ifdef MEMAUDIT_WITH_CUDA
  const c10::DeviceIndex index = device.has_index() ? device.index() : 0;
  CudaMemory memory;
  try {
    // Index 0 of each StatArray is StatType::AGGREGATE (all pools), in
    // LibTorch 1.13 as in 2.x, where the type moved namespaces.
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
    memory.allocated = stats.allocated_bytes[0].current;
    memory.reserved = stats.reserved_bytes[0].current;
    memory.peak_allocated = stats.allocated_bytes[0].peak;
    c10::cuda::CUDAGuard guard(index);
    size_t free = 0, total = 0;
    if (const cudaError_t error = cudaMemGetInfo(&free, &total); error != cudaSuccess) {
      return absl::InternalError(
          absl::StrCat("cudaMemGetInfo on ", device.str(), ": ", cudaGetErrorString(error)));
    }
    memory.free = static_cast<int64_t>(free);
    memory.total = static_cast<int64_t>(total);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("CUDA memory of ", device.str(), ": ", e.what()));
  }
  return memory;
#else
  return absl::UnimplementedError(
      absl::StrCat("this build has no CUDA support (a CPU LibTorch); cannot query ", device.str()));
#endif
}

}  // namespace memaudit
