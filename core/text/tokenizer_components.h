// The parts of a tokenizer.json before the model (internal to
// core/text/tokenizer.cc): JSON reading helpers that name the path of what they
// reject, the normalizers and the pre-tokenizers. Parsed components are
// immutable; Apply may run concurrently.
#ifndef MEMAUDIT_CORE_TEXT_TOKENIZER_COMPONENTS_H_
#define MEMAUDIT_CORE_TEXT_TOKENIZER_COMPONENTS_H_

#include <unicode/regex.h>
#include <unicode/unistr.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/text/tokenizer_unicode.h"
#include "nlohmann/json.hpp"

namespace memaudit::tokenizer_internal {

using Json = nlohmann::json;

// The deepest nesting of "Sequence" normalizers or pre-tokenizers accepted.
// Real tokenizers nest one or two; parsing and Apply recurse once per level,
// so an unbounded depth (a hostile tokenizer.json 20,000 deep) would
// overflow the stack and end the process.
inline constexpr int kMaxSequenceDepth = 16;

// Error context: the JSON path of the object being parsed, and how many
// Sequences enclose it.
struct Ctx {
  std::string path;
  int sequence_depth = 0;
  Ctx Child(std::string_view key) const {
    return {path.empty() ? std::string(key)
                         : absl::StrCat(path, ".", absl::string_view(key.data(), key.size())),
            sequence_depth};
  }
  Ctx Index(size_t i) const { return {absl::StrCat(path, "[", i, "]"), sequence_depth}; }
  // The context of a Sequence's members; INVALID_ARGUMENT past
  // kMaxSequenceDepth.
  absl::StatusOr<Ctx> EnterSequence() const {
    if (sequence_depth >= kMaxSequenceDepth) {
      return Error(absl::StrCat("\"Sequence\" nested deeper than ", kMaxSequenceDepth, " levels"));
    }
    return Ctx{path, sequence_depth + 1};
  }
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", absl::string_view(what.data(), what.size())));
  }
};

// The member `key` of `obj`; INVALID_ARGUMENT naming the path when missing.
absl::StatusOr<const Json*> Field(const Json& obj, std::string_view key, const Ctx& ctx);
absl::StatusOr<std::string> StringField(const Json& obj, std::string_view key, const Ctx& ctx);
// `fallback` when the member is absent or null.
absl::StatusOr<bool> BoolField(const Json& obj, std::string_view key, bool fallback,
                               const Ctx& ctx);
// The "type" of a component object.
absl::StatusOr<std::string> TypeOf(const Json& obj, const Ctx& ctx);
// INVALID_ARGUMENT: <path>.type "<type>" is not supported.
absl::Status Unsupported(const Ctx& ctx, std::string_view type);
// A tokenizer.json "pattern": {"String": ...} or {"Regex": ...}, compiled.
absl::StatusOr<std::shared_ptr<icu::RegexPattern>> CompilePattern(const Json& pattern,
                                                                  const Ctx& ctx);

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // A failure (ICU's, the regex budget's, the caller's stop) is recorded in
  // run->error (kept if already set).
  virtual icu::UnicodeString Apply(const icu::UnicodeString& text, EncodeRun* run) const = 0;
};
// tokenizer.json's "normalizer" object (not null).
absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const Json& j, const Ctx& ctx);

using Pieces = std::vector<icu::UnicodeString>;
class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Appends the pieces of `piece` to *out; a failure goes to run->error.
  virtual void Apply(const icu::UnicodeString& piece, Pieces* out, EncodeRun* run) const = 0;
};
// tokenizer.json's "pre_tokenizer" object (not null).
absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const Json& j, const Ctx& ctx);

// GPT-2's byte-to-unicode table: each byte becomes one printable character.
const std::vector<std::string>& ByteToUnicode();

}  // namespace memaudit::tokenizer_internal

#endif  // MEMAUDIT_CORE_TEXT_TOKENIZER_COMPONENTS_H_
