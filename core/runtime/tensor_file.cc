#include "core/runtime/tensor_file.h"

#include <torch/csrc/jit/serialization/pickle.h>

#include <fstream>
#include <iterator>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/base/shape_string.h"
#include "core/base/status_macros.h"
#include "core/runtime/archive_check.h"
#include "core/runtime/torch_runtime.h"

namespace memaudit {

absl::Status CheckDenseTensor(const at::Tensor& tensor, const std::string& what) {
  if (tensor.is_quantized() || tensor.layout() != at::kStrided) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": a quantized or sparse tensor; expected a dense one"));
  }
  if (tensor.numel() == 0) return absl::OkStatus();
  // The last element's offset, in elements, without overflow: a pickled
  // tensor names its shape, strides and offset apart from its storage, and
  // nothing in LibTorch checks they fit before the data is read.
  __int128 last = tensor.storage_offset();
  bool valid = last >= 0;
  for (int64_t d = 0; d < tensor.dim() && valid; ++d) {
    valid = tensor.stride(d) >= 0;
    last += static_cast<__int128>(tensor.size(d) - 1) * tensor.stride(d);
  }
  const __int128 stored = static_cast<__int128>(tensor.storage().nbytes()) /
                          static_cast<__int128>(tensor.element_size());
  if (!valid || last >= stored) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": shape ", ShapeString(tensor.sizes()), " does not fit the ",
        tensor.storage().nbytes(), " bytes of data it is stored with (a corrupt or crafted file)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> LoadTensorFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open file"));
  RETURN_IF_ERROR(CheckArchive(path));
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  try {
    c10::IValue value = torch::jit::pickle_load(bytes);
    if (!value.isTensor()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": holds a ", value.tagKind(), ", expected a single tensor"));
    }
    at::Tensor tensor = value.toTensor();
    RETURN_IF_ERROR(CheckDenseTensor(tensor, path));
    return tensor;
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
