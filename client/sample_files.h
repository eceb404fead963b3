// Writing samples to files: PNG grids for image-shaped models, NumPy .npy
// for anything else.
#ifndef MEMAUDIT_CLIENT_SAMPLE_FILES_H_
#define MEMAUDIT_CLIENT_SAMPLE_FILES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "memaudit/v1/tensor.pb.h"

namespace memaudit::client {

// The float values of a FLOAT32/FLOAT64 tensor message.
absl::StatusOr<std::vector<float>> TensorValues(const v1::Tensor& tensor);

// Whether per-sample `shape` is an image: [H, W], [1, H, W] or [3, H, W].
bool IsImageShape(const std::vector<int64_t>& shape);

// `count` (>= 1) images of per-sample `shape` as the bytes of one PNG grid
// (8-bit, grayscale or RGB), mapping [low, high] to [0, 255] (values
// clipped), row by row in `columns` columns (0: a near-square grid).
// INVALID_ARGUMENT for a shape that is not an image or too few values.
absl::StatusOr<std::string> EncodePngGrid(const std::vector<float>& values, int64_t count,
                                          const std::vector<int64_t>& shape, float low, float high,
                                          int64_t columns = 0);

// OK for an output name ending in .png or .npy (the format is the name's);
// INVALID_ARGUMENT naming `flag` and the name otherwise.
absl::Status CheckSampleFileName(const std::string& flag, const std::string& path);

// Writes `contents` to `path`, replacing it. Errors name the path and the
// reason: NOT_FOUND when its directory does not exist, PERMISSION_DENIED
// when it may not be written, others as errno says.
absl::Status WriteOutputFile(const std::string& path, const std::string& contents);

// Writes EncodePngGrid's PNG to `path`; errors name the path.
absl::Status WritePngGrid(const std::string& path, const std::vector<float>& values, int64_t count,
                          const std::vector<int64_t>& shape, float low, float high,
                          int64_t columns = 0);

// Writes a float32 .npy array of `shape`; errors as WriteOutputFile.
absl::Status WriteNpy(const std::string& path, const std::vector<float>& values,
                      const std::vector<int64_t>& shape);

}  // namespace memaudit::client

#endif  // MEMAUDIT_CLIENT_SAMPLE_FILES_H_
