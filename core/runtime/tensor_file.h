// Single-tensor files in PyTorch's torch.save format, readable and writable
// from both Python (torch.load / torch.save) and C++.
#ifndef MEMAUDIT_CORE_RUNTIME_TENSOR_FILE_H_
#define MEMAUDIT_CORE_RUNTIME_TENSOR_FILE_H_

#include <ATen/Tensor.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace memaudit {

// NOT_FOUND if `path` can't be opened; INVALID_ARGUMENT (naming the file) if
// it is not a torch.save file holding exactly one dense tensor whose shape
// fits its stored data (CheckDenseTensor).
absl::StatusOr<at::Tensor> LoadTensorFile(const std::string& path);

// INVALID_ARGUMENT naming `what` unless `tensor` is dense (not quantized or
// sparse) and its shape, strides and offset address only the storage it
// has: a crafted file can claim a shape larger than its data, which LibTorch
// would read past (a crash, or another buffer's bytes).
absl::Status CheckDenseTensor(const at::Tensor& tensor, const std::string& what);

// Writes `tensor` (moved to the CPU) so that torch.load reads it back.
absl::Status SaveTensorFile(const std::string& path, const at::Tensor& tensor);

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_RUNTIME_TENSOR_FILE_H_
