#include "core/runtime/torch_runtime.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/version.h>

#include <algorithm>
#include <cstdlib>
#include <new>
#include <string_view>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/runtime/host_allocator.h"

namespace memaudit {
namespace {
constexpr size_t kMaxErrorChars = 800;
}  // namespace

bool OneDnnEnabled() {
  // Measured in a Debian 13 root (python3-torch 2.6, 2 threads, checkpoints/
  // mnist39, 120 vector-Jacobian products against the float64 network):
  // with oneDNN 22 all-NaN and 75 of 98 finite ones > 1e-4 off; without it
  // all within 2.6e-7. On 1.13 both within 3.6e-7 (docs/DESIGN.md §6).
  constexpr bool kDefault = TORCH_VERSION_MAJOR < 2;
  const char* setting = std::getenv("MEMAUDIT_ONEDNN");
  if (setting == nullptr) return kDefault;
  const std::string_view value(setting);
  if (value == "on" || value == "1") return true;
  if (value == "off" || value == "0") return false;
  return kDefault;
}

void ConfigureTorchKernels() {
  torch::jit::setGraphExecutorOptimize(false);
  static const bool one_dnn = OneDnnEnabled();
  if (at::globalContext().userEnabledMkldnn() != one_dnn) {
    at::globalContext().setUserEnabledMkldnn(one_dnn);
  }
}

void ConfigureTorchRuntime(int num_threads) {
  ConfigureTorchKernels();
  ConfigureHostAllocator();
  if (num_threads <= 0) {
    num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  if (at::get_num_threads() != num_threads) at::set_num_threads(num_threads);
}

std::string TorchErrorMessage(const std::exception& error) {
  std::string message;
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&error)) {
    message = c10_error->what_without_backtrace();
  } else {
    message = error.what();
  }
  // TorchScript errors carry a "Traceback of TorchScript" and source excerpts;
  // the last non-empty line usually holds the actual complaint, the first the
  // context. Keep the text but bound it.
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) {
    message.pop_back();
  }
  if (message.size() > kMaxErrorChars) {
    message = absl::StrCat(message.substr(0, kMaxErrorChars / 2), " [...] ",
                           message.substr(message.size() - kMaxErrorChars / 2));
  }
  return message;
}

absl::Status TorchError(absl::StatusCode code, const std::string& context,
                        const std::exception& error) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&error) != nullptr ||
      dynamic_cast<const std::bad_alloc*>(&error) != nullptr) {
    code = absl::StatusCode::kResourceExhausted;
  }
  return absl::Status(code, absl::StrCat(context, ": ", TorchErrorMessage(error)));
}

}  // namespace memaudit
