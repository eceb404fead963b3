// The Unicode layer of the tokenizer (internal to core/tokenizer.cc): UTF-8
// conversion, JavaScript's whitespace set (the reference implementation is
// JavaScript), and tokenizer.json's Oniguruma regexes run on ICU with the
// reference's meaning. Stateless functions; thread-safe.
#ifndef MEMAUDIT_CORE_TOKENIZER_UNICODE_H_
#define MEMAUDIT_CORE_TOKENIZER_UNICODE_H_

#include <unicode/regex.h>
#include <unicode/unistr.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace memaudit::tokenizer_internal {

std::string ToUtf8(const icu::UnicodeString& s);
icu::UnicodeString FromUtf8(std::string_view s);
bool IsValidUtf8(std::string_view s);

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
// Every match of `pattern` in `text`, left to right. An ICU failure (e.g. its
// backtracking stack limit) is reported in *error (kept if already set).
std::vector<Match> FindAll(const icu::RegexPattern& pattern, const icu::UnicodeString& text,
                           absl::Status* error);

}  // namespace memaudit::tokenizer_internal

#endif  // MEMAUDIT_CORE_TOKENIZER_UNICODE_H_
