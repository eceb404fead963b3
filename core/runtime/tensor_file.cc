#include "core/runtime/tensor_file.h"

#include <torch/csrc/jit/serialization/pickle.h>

#include <fstream>
#include <iterator>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/runtime/torch_runtime.h"

namespace memaudit {

absl::StatusOr<at::Tensor> LoadTensorFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open file"));
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  try {
    c10::IValue value = torch::jit::pickle_load(bytes);
    if (!value.isTensor()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": holds a ", value.tagKind(), ", expected a single tensor"));
    }
    return value.toTensor();
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInvalidArgument,
                      absl::StrCat(path, ": not a tensor file written by torch.save"), e);
  }
}

absl::Status SaveTensorFile(const std::string& path, const at::Tensor& tensor) {
  try {
    std::vector<char> bytes = torch::jit::pickle_save(tensor.detach().cpu().contiguous());
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) return absl::InternalError(absl::StrCat(path, ": write failed"));
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInternal, absl::StrCat(path, ": cannot serialize"), e);
  }
  return absl::OkStatus();
}

}  // namespace memaudit
