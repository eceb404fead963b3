#include "core/runtime/host_allocator.h"

#include <malloc.h>

#include <chrono>
#include <climits>
#include <cstdlib>
#include <string_view>

namespace memaudit {
namespace {

// Work in flight, and how many pieces of work have ended (so that an idle
// period is released once, however long it lasts).
std::atomic<int64_t> work_in_flight{0};
std::atomic<uint64_t> work_ended{0};
std::atomic<int64_t> last_end_nanos{0};

// A monotonic clock: a step of the wall clock must not delay a release.
int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Whether the operator set malloc through the environment: GLIBC_TUNABLES'
// glibc.malloc.* or the older MALLOC_*_ variables glibc still reads.
bool MallocSetByEnvironment() {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables != nullptr &&
      std::string_view(tunables).find("glibc.malloc.") != std::string_view::npos) {
    return true;
  }
  for (const char* variable :
       {"MALLOC_ARENA_MAX", "MALLOC_ARENA_TEST", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"}) {
    if (std::getenv(variable) != nullptr) return true;
  }
  return false;
}

}  // namespace

bool ConfigureHostAllocator() {
  static const bool configured = [] {
    if (MallocSetByEnvironment()) return false;
    // All three, measured (docs/PERFORMANCE.md, "Host memory"): the trim
    // threshold alone made a single-threaded dense-spectrum test 295 s
    // against 52-58 s (mmap from 128 KiB on); with the mmap threshold too
    // but several arenas, the server still faulted 75,000-430,000 pages per
    // mnist39 audit, because worker threads' arenas delete their heaps when
    // these empty; with no mmap at all (M_MMAP_MAX 0) the heap fragments and
    // a 32-seed Sample's peak grew from +393 to +1,089 MiB.
    return mallopt(M_ARENA_MAX, 1) == 1 &&
           mallopt(M_MMAP_THRESHOLD, static_cast<int>(kHostMmapThresholdBytes)) == 1 &&
           mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1;
  }();
  return configured;
}

void ReleaseFreeHostMemory() { malloc_trim(0); }

HostWork::HostWork() { work_in_flight.fetch_add(1); }

HostWork::~HostWork() {
  last_end_nanos.store(NowNanos());
  work_ended.fetch_add(1);
  work_in_flight.fetch_sub(1);
}

HostMemoryReleaser::HostMemoryReleaser(absl::Duration idle)
    : idle_(idle), thread_([this] { Run(); }) {}

HostMemoryReleaser::~HostMemoryReleaser() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void HostMemoryReleaser::Run() {
  uint64_t released_at = work_ended.load();
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&stopping_), idle_ / 2)) {
    const uint64_t ended = work_ended.load();
    if (ended == released_at || work_in_flight.load() > 0) continue;
    if (NowNanos() - last_end_nanos.load() < absl::ToInt64Nanoseconds(idle_)) continue;
    // Work that ended while this thread looked gets its own idle period;
    // releasing now would count `ended` and then release again for it.
    if (work_ended.load() != ended) continue;
    ReleaseFreeHostMemory();
    released_at = ended;
    releases_.fetch_add(1);
  }
}

}  // namespace memaudit
