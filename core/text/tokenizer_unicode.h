// The Unicode layer of the tokenizer (internal to core/text/tokenizer.cc): UTF-8
// conversion, JavaScript's whitespace set (the reference implementation is
// JavaScript), and tokenizer.json's Oniguruma regexes run on ICU with the
// reference's meaning. Stateless functions; thread-safe.
#ifndef MEMAUDIT_CORE_TEXT_TOKENIZER_UNICODE_H_
#define MEMAUDIT_CORE_TEXT_TOKENIZER_UNICODE_H_

#include <unicode/regex.h>
#include <unicode/unistr.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/base/stop.h"

namespace memaudit::tokenizer_internal {

std::string ToUtf8(const icu::UnicodeString& s);
icu::UnicodeString FromUtf8(std::string_view s);

// JavaScript's String.prototype.trim whitespace (WhiteSpace + LineTerminator),
// as a predicate and as an ICU character-class body.
bool IsJsWhitespace(UChar32 c);
extern const char* const kJsWhitespaceClassBody;
icu::UnicodeString TrimStart(const icu::UnicodeString& s);
icu::UnicodeString TrimEnd(const icu::UnicodeString& s);

// An Oniguruma pattern (tokenizer.json's "Regex") in ICU syntax, with the
// reference's meaning where the engines differ (see tokenizer_unicode.cc).
// INVALID_ARGUMENT for constructs it cannot translate.
absl::StatusOr<std::string> TranslateRegex(const std::string& pattern);

// `literal` escaped for an ICU pattern.
std::string QuoteRegex(const std::string& literal);

struct Match {
  int32_t start, end;  // UTF-16 offsets
};

// The regex work one Encode call may do, in ICU's time units: ICU calls
// back every 10,000 match steps (about 0.1 ms on one core here). Real
// tokenizers spend a tiny part of it on a prompt of 64 KiB; a backtracking
// pattern such as (?:a+)+$ spends 6,710 units on 24 characters and grows
// exponentially, so a hostile tokenizer.json cannot pin a thread. (CLIP's
// pattern on 64 KiB spends under 100 units: TokenizerTest.)
inline constexpr int64_t kMaxRegexUnitsPerEncode = 10'000;

// The state of one Encode call, shared by the components its text passes
// through: the first failure (later work is skipped), the caller's stop
// check (may be empty) and what is left of the regex budget.
struct EncodeRun {
  absl::Status error;
  StopCheck stop;
  int64_t regex_units_left = kMaxRegexUnitsPerEncode;
  // The longest text (UTF-16 units) a normalizer may make of its input: a
  // Replace normalizer's content can multiply the text (a 32 KB file grew
  // "a" to 10^8 characters, minutes of BPE and gigabytes of memory).
  int64_t max_normalized_length = kMaxNormalizedLengthFloor;
  static constexpr int64_t kMaxNormalizedLengthFloor = 4096;
  // Per input unit: NFKC expands one character to at most 18.
  static constexpr int64_t kMaxNormalizedGrowth = 32;
};

// Every match of `pattern` in `text`, left to right, as long as run->error
// is OK. A failure is recorded in run->error: the stop check's status,
// RESOURCE_EXHAUSTED naming `where` (the pattern's place in tokenizer.json)
// when the regex budget or ICU's backtracking stack runs out, INTERNAL when
// ICU fails otherwise.
std::vector<Match> FindAll(const icu::RegexPattern& pattern, const icu::UnicodeString& text,
                           std::string_view where, EncodeRun* run);

}  // namespace memaudit::tokenizer_internal

#endif  // MEMAUDIT_CORE_TEXT_TOKENIZER_UNICODE_H_
