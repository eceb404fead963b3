// glibc malloc settings for LibTorch's CPU tensors, and the release of the
// memory they keep when the process is idle.
//
// A batched forward + backward on the CPU (a dense Jacobian chunk, a guided
// sampling step, an Arnoldi product) allocates activations of a few to a few
// hundred MiB and frees them at its end. With glibc's defaults that memory
// goes back to the kernel (blocks above the adaptive mmap threshold are
// unmapped, heap tops above the trim threshold are trimmed, and a thread
// arena's heap that empties is deleted whatever the threshold) and the next
// pass faults it in again, zero-filled, page by page. Measured on this
// 2-core machine (docs/PERFORMANCE.md, "Host memory"): a guided audit of
// checkpoints/mnist39 in the server faulted 3,150-412,921 pages, against
// 0-9,459 after the first with the settings below, and took a quarter more
// CPU and wall time; the dense-spectrum test at Stable Diffusion's
// settings (one thread) took 52-58 s against 20-23 s. Blocks above the mmap
// threshold below are still faulted per use: on Debian 13 (LibTorch 2.6
// without oneDNN) mnist39's im2col buffers are, and the settings cut its
// faults only 1.3-2.3-fold.
#ifndef MEMAUDIT_CORE_RUNTIME_HOST_ALLOCATOR_H_
#define MEMAUDIT_CORE_RUNTIME_HOST_ALLOCATOR_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace memaudit {

// Blocks up to this size come from malloc's heap; larger ones are mapped
// and unmapped per use, as by default (glibc's ceiling for its adaptive
// threshold). Keeping those in the heap too fragments it.
inline constexpr size_t kHostMmapThresholdBytes = size_t{32} << 20;

// Sets glibc's malloc so that freed memory stays in the process for the next
// pass: one arena (M_ARENA_MAX 1: thread arenas delete emptied heaps), the
// mmap threshold fixed at kHostMmapThresholdBytes, and the trim threshold
// at its largest, 2 GiB (a free heap top below that stays). Small
// allocations still take glibc's per-thread cache without the arena lock.
// The cost: the process keeps the heap of its busiest moment until
// ReleaseFreeHostMemory (HostMemoryReleaser does it when idle).
//
// Returns true when mallopt accepted the three settings. Returns false
// without calling it when the environment sets malloc (GLIBC_TUNABLES with
// any glibc.malloc tunable, or one of the MALLOC_*_ variables glibc reads:
// the operator's choice wins), and false when mallopt refuses a setting
// (those before it stay; AddressSanitizer's malloc refuses them all).
// M_ARENA_MAX binds threads that take their first arena afterwards: call it
// early in main, before threads start (ConfigureTorchRuntime does).
// Idempotent and thread-safe.
bool ConfigureHostAllocator();

// Returns the heap's free memory to the kernel (malloc_trim(0)), in the
// middle of the heap too; what is in use stays. Thread-safe; it holds the
// arena's lock while it walks the heap.
void ReleaseFreeHostMemory();

// Marks heavy work in flight for HostMemoryReleaser: construct one around
// each task (WorkerPool does) and around model loads (the server's
// loader). Thread-safe; a few atomic operations and a clock read.
class HostWork {
 public:
  HostWork();
  ~HostWork();
  HostWork(const HostWork&) = delete;
  HostWork& operator=(const HostWork&) = delete;
};

// A thread that calls ReleaseFreeHostMemory once no HostWork has been in
// flight for `idle` (checked every idle/2, so idle to 1.5 × idle after the
// last one ends), once per idle period. The
// server owns one, so that a finished audit's peak does not stay resident.
// Destruction stops and joins the thread.
class HostMemoryReleaser {
 public:
  explicit HostMemoryReleaser(absl::Duration idle = absl::Seconds(2));
  ~HostMemoryReleaser();
  HostMemoryReleaser(const HostMemoryReleaser&) = delete;
  HostMemoryReleaser& operator=(const HostMemoryReleaser&) = delete;

  // How many times it has released memory.
  int64_t releases() const { return releases_.load(); }

 private:
  void Run();

  const absl::Duration idle_;
  std::atomic<int64_t> releases_{0};
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_RUNTIME_HOST_ALLOCATOR_H_
