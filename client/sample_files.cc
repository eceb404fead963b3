#include "client/sample_files.h"

#include <png.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace memaudit::client {

absl::Status CheckSampleFileName(const std::string& flag, const std::string& path) {
  if (absl::EndsWith(path, ".png") || absl::EndsWith(path, ".npy")) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(flag, " ", path, ": give a .png or .npy file name"));
}

absl::Status WriteOutputFile(const std::string& path, const std::string& contents) {
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) {
    return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot open for writing"));
  }
  const bool written = std::fwrite(contents.data(), 1, contents.size(), file) == contents.size();
  const int write_error = errno;
  if (std::fclose(file) != 0 || !written) {
    return absl::ErrnoToStatus(written ? errno : write_error, absl::StrCat(path, ": write failed"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> TensorValues(const v1::Tensor& tensor) {
  int64_t count = 1;
  for (int64_t d : tensor.shape()) count *= d;
  std::vector<float> values(count);
  if (tensor.dtype() == v1::FLOAT32 && tensor.data().size() == count * sizeof(float)) {
    std::memcpy(values.data(), tensor.data().data(), tensor.data().size());
  } else if (tensor.dtype() == v1::FLOAT64 && tensor.data().size() == count * sizeof(double)) {
    const auto* source = reinterpret_cast<const double*>(tensor.data().data());
    for (int64_t i = 0; i < count; ++i) values[i] = static_cast<float>(source[i]);
  } else {
    return absl::InvalidArgumentError("server sent a tensor whose size does not match its shape");
  }
  return values;
}

bool IsImageShape(const std::vector<int64_t>& shape) {
  if (shape.size() == 2) return shape[0] > 1 && shape[1] > 1;
  return shape.size() == 3 && (shape[0] == 1 || shape[0] == 3) && shape[1] > 1 && shape[2] > 1;
}

absl::StatusOr<std::string> EncodePngGrid(const std::vector<float>& values, int64_t count,
                                          const std::vector<int64_t>& shape, float low, float high,
                                          int64_t columns) {
  if (!IsImageShape(shape)) return absl::InvalidArgumentError("not an image shape");
  const int64_t channels = shape.size() == 3 ? shape[0] : 1;
  const int64_t height = shape[shape.size() - 2];
  const int64_t width = shape[shape.size() - 1];
  if (count < 1 || static_cast<int64_t>(values.size()) < count * channels * height * width) {
    return absl::InvalidArgumentError(absl::StrCat(
        values.size(), " values for ", count, " images of ", channels, "x", height, "x", width));
  }
  if (columns <= 0) {
    columns = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(std::sqrt(count))));
  }
  const int64_t rows = (count + columns - 1) / columns;
  constexpr int64_t kGap = 2;
  const int64_t grid_width = columns * width + (columns + 1) * kGap;
  const int64_t grid_height = rows * height + (rows + 1) * kGap;
  std::vector<uint8_t> pixels(grid_width * grid_height * channels, 0);
  for (int64_t n = 0; n < count; ++n) {
    const int64_t top = kGap + (n / columns) * (height + kGap);
    const int64_t left = kGap + (n % columns) * (width + kGap);
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t y = 0; y < height; ++y) {
        for (int64_t x = 0; x < width; ++x) {
          const float v = values[((n * channels + c) * height + y) * width + x];
          const float unit = std::clamp((v - low) / (high - low), 0.0f, 1.0f);
          pixels[((top + y) * grid_width + left + x) * channels + c] =
              static_cast<uint8_t>(std::lround(unit * 255.0f));
        }
      }
    }
  }
  std::string encoded;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return absl::InternalError("PNG encoding failed");
  }
  png_set_write_fn(
      png, &encoded,
      [](png_structp png, png_bytep data, png_size_t length) {
        static_cast<std::string*>(png_get_io_ptr(png))
            ->append(reinterpret_cast<const char*>(data), length);
      },
      nullptr);
  png_set_IHDR(png, info, static_cast<png_uint_32>(grid_width),
               static_cast<png_uint_32>(grid_height), 8,
               channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int64_t y = 0; y < grid_height; ++y) {
    png_write_row(png, pixels.data() + y * grid_width * channels);
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return encoded;
}

absl::Status WritePngGrid(const std::string& path, const std::vector<float>& values, int64_t count,
                          const std::vector<int64_t>& shape, float low, float high,
                          int64_t columns) {
  absl::StatusOr<std::string> encoded = EncodePngGrid(values, count, shape, low, high, columns);
  if (!encoded.ok()) {
    return absl::Status(encoded.status().code(),
                        absl::StrCat(path, ": ", encoded.status().message()));
  }
  return WriteOutputFile(path, *encoded);
}

absl::Status WriteNpy(const std::string& path, const std::vector<float>& values,
                      const std::vector<int64_t>& shape) {
  // NPY 1.0: magic, version, little-endian header length, a Python dict
  // literal padded with spaces to a multiple of 64 bytes, then the data.
  std::string header =
      absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': (",
                   absl::StrJoin(shape, ", "), shape.size() == 1 ? ",), }" : "), }");
  const size_t preamble = 10;
  header.append(64 - (preamble + header.size() + 1) % 64, ' ');
  header.push_back('\n');
  const uint16_t header_length = static_cast<uint16_t>(header.size());
  std::string bytes("\x93NUMPY\x01\x00", 8);
  bytes.push_back(static_cast<char>(header_length & 0xff));
  bytes.push_back(static_cast<char>(header_length >> 8));
  bytes += header;
  bytes.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  return WriteOutputFile(path, bytes);
}

}  // namespace memaudit::client
