// tokenizer.json text → Tokenizer::FromJson → Encode and EncodeForModel.
// The input is a prompt (up to the first newline) and the tokenizer.json
// text after it. Loading must give OK or INVALID_ARGUMENT for any text
// (nesting, regexes, sizes included); a loaded tokenizer must encode the
// prompt with OK, INVALID_ARGUMENT (not UTF-8) or RESOURCE_EXHAUSTED (the
// regex budget), within seconds, the same ids twice, and EncodeForModel
// must give exactly max_length ids.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/text/tokenizer.h"
#include "fuzz/fuzz_check.h"

namespace {

bool Allowed(absl::StatusCode code) {
  return code == absl::StatusCode::kOk || code == absl::StatusCode::kInvalidArgument ||
         code == absl::StatusCode::kResourceExhausted;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t newline = input.find('\n');
  const std::string_view prompt = input.substr(0, newline);
  const std::string_view json =
      newline == std::string_view::npos ? std::string_view() : input.substr(newline + 1);

  absl::StatusOr<std::unique_ptr<memaudit::Tokenizer>> tokenizer =
      memaudit::Tokenizer::FromJson(json, "tokenizer.json");
  FUZZ_LOG_STATUS(tokenizer.status());
  if (!tokenizer.ok()) {
    FUZZ_CHECK(tokenizer.status().code() == absl::StatusCode::kInvalidArgument, "%s",
               tokenizer.status().ToString().c_str());
    return 0;
  }

  // The regex budget ends hostile patterns in about a second; the stop
  // check only records whether Encode outlived that by far.
  const auto start = std::chrono::steady_clock::now();
  bool overran = false;
  const memaudit::StopCheck stop = [&] {
    overran = overran || std::chrono::steady_clock::now() - start > std::chrono::seconds(8);
    return absl::OkStatus();
  };
  absl::StatusOr<std::vector<int64_t>> ids = (*tokenizer)->Encode(prompt, stop);
  FUZZ_LOG_STATUS(ids.status());
  FUZZ_CHECK(Allowed(ids.status().code()), "%s", ids.status().ToString().c_str());
  FUZZ_CHECK(!overran, "Encode ran past 8 s: %s", ids.status().ToString().c_str());
  if (!ids.ok()) return 0;
  absl::StatusOr<std::vector<int64_t>> again = (*tokenizer)->Encode(prompt);
  FUZZ_CHECK(again.ok() && *again == *ids, "a second Encode differs: %s",
             again.status().ToString().c_str());

  constexpr int kMaxLength = 77;
  absl::StatusOr<std::vector<int64_t>> padded =
      (*tokenizer)->EncodeForModel(prompt, kMaxLength, /*pad_id=*/0);
  FUZZ_CHECK(Allowed(padded.status().code()), "%s", padded.status().ToString().c_str());
  if (padded.ok()) {
    FUZZ_CHECK(padded->size() == kMaxLength, "EncodeForModel gave %zu ids", padded->size());
  }
  return 0;
}
