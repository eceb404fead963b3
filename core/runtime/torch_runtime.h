// Process-wide LibTorch settings that core/ relies on, and conversion of
// LibTorch exceptions into absl::Status.
#ifndef MEMAUDIT_CORE_RUNTIME_TORCH_RUNTIME_H_
#define MEMAUDIT_CORE_RUNTIME_TORCH_RUNTIME_H_

#include <exception>
#include <string>

#include "absl/status/status.h"

namespace memaudit {

// Applies the kernel settings every model load needs (idempotent; Checkpoint
// and ScriptModule loads call it, before any forward pass):
//  - TorchScript graph-executor optimization off. Forward-mode AD through a
//    scripted module silently loses tangents with it on (docs/DESIGN.md §6), and
//    Jacobians are faster without it.
//  - oneDNN ("mkldnn") CPU kernels off on LibTorch 2.x, on for 1.13 (see
//    OneDnnEnabled). The environment variable MEMAUDIT_ONEDNN=on|off overrides
//    the choice for the whole process.
void ConfigureTorchKernels();

// Whether ConfigureTorchKernels leaves LibTorch's oneDNN CPU kernels on: off
// by default on LibTorch 2.x, where Debian 13's build (2.6 with oneDNN 3.7.2)
// returns NaN or wrong (median 10%) convolution input gradients at two or
// more threads and computes bfloat16 convolutions 10% away from float32
// (docs/DESIGN.md §6); on for LibTorch 1.13, whose oneDNN is correct and
// faster. Reads MEMAUDIT_ONEDNN; an unrecognised value keeps the default.
bool OneDnnEnabled();

// Applies the settings core/ needs; idempotent and thread-safe:
//  - ConfigureTorchKernels().
//  - ConfigureHostAllocator() (core/runtime/host_allocator.h): freed CPU
//    activations stay in the heap for the next pass.
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

#endif  // MEMAUDIT_CORE_RUNTIME_TORCH_RUNTIME_H_
