// Process-wide LibTorch settings that core/ relies on, and conversion of
// LibTorch exceptions into absl::Status.
#ifndef MEMAUDIT_CORE_TORCH_RUNTIME_H_
#define MEMAUDIT_CORE_TORCH_RUNTIME_H_

#include <exception>
#include <string>

#include "absl/status/status.h"

namespace memaudit {

// Turns TorchScript graph-executor optimization off (see below). Idempotent;
// Checkpoint::Load calls it.
void ConfigureTorchJit();

// Applies the settings core/ needs; idempotent and thread-safe:
//  - TorchScript graph-executor optimization off. Forward-mode AD through a
//    scripted module silently loses tangents with it on (docs/DESIGN.md §6), and
//    Jacobians are faster without it.
//  - intra-op threads = `num_threads` (0: the machine's hardware concurrency;
//    LibTorch defaults to 1 on these machines).
void ConfigureTorchRuntime(int num_threads = 0);

// One readable line (or a few) from a LibTorch exception: the message without
// the C++ backtrace, truncated to a bounded length.
std::string TorchErrorMessage(const std::exception& error);

// Wraps `error` as a Status with `code`, prefixed by `context`; an
// out-of-memory error (c10::OutOfMemoryError, std::bad_alloc) is
// RESOURCE_EXHAUSTED whatever `code` says, so callers can tell "too big for
// this device now" from a model that cannot do what was asked.
absl::Status TorchError(absl::StatusCode code, const std::string& context,
                        const std::exception& error);

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_TORCH_RUNTIME_H_
