#include "core/text/tokenizer_unicode.h"

#include <unicode/utf8.h>

#include <memory>

#include "absl/strings/str_cat.h"

namespace memaudit::tokenizer_internal {

std::string ToUtf8(const icu::UnicodeString& s) {
  std::string out;
  s.toUTF8String(out);
  return out;
}

icu::UnicodeString FromUtf8(std::string_view s) {
  return icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
}

// JavaScript's String.prototype.trim whitespace (WhiteSpace + LineTerminator):
// the reference trims with it (Strip normalizer, added tokens' lstrip/rstrip).
bool IsJsWhitespace(UChar32 c) {
  switch (c) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x20:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
    case 0xFEFF:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

// The same set as an ICU character-class body.
const char* const kJsWhitespaceClassBody =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}\\x{FEFF}";

icu::UnicodeString TrimStart(const icu::UnicodeString& s) {
  int32_t i = 0;
  while (i < s.length() && IsJsWhitespace(s.char32At(i))) i = s.moveIndex32(i, 1);
  return icu::UnicodeString(s, i);
}

icu::UnicodeString TrimEnd(const icu::UnicodeString& s) {
  int32_t end = s.length();
  while (end > 0) {
    const int32_t prev = s.moveIndex32(end, -1);
    if (!IsJsWhitespace(s.char32At(prev))) break;
    end = prev;
  }
  return icu::UnicodeString(s, 0, end);
}

// Translates an Oniguruma pattern (tokenizer.json's "Regex") to ICU syntax
// with the reference's meaning where the two engines differ: \s \S \d \D
// \w \W spelled out as Unicode properties, \h \H as hex digits (ICU: horizontal
// space), \b \B on that word class, `.` excluding only \n (ICU: every line
// terminator), ^ $ \Z at line starts and ends marked by \n only (Oniguruma is
// always multi-line), and (?i:...) groups folding ASCII letters only.
absl::StatusOr<std::string> TranslateRegex(const std::string& pattern) {
  constexpr const char* kWord =
      "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{B2}\\x{B3}\\x{B9}\\x{BC}-\\x{BE}";
  std::string out;
  int class_depth = 0;
  std::vector<bool> fold_stack = {false};
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\') {
      if (i + 1 >= pattern.size()) return absl::InvalidArgumentError("pattern ends in a backslash");
      const char e = pattern[i + 1];
      const bool in_class = class_depth > 0;
      std::string set;
      switch (e) {
        case 's':
          set = "\\p{White_Space}";
          break;
        case 'S':
          set = "\\P{White_Space}";
          break;
        case 'd':
          set = "\\p{Nd}";
          break;
        case 'D':
          set = "\\P{Nd}";
          break;
        case 'w':
          set = kWord;
          break;
        case 'h':
          set = "0-9a-fA-F";
          break;
        case 'W':
        case 'H':
          if (in_class) {
            return absl::InvalidArgumentError(absl::StrCat(
                "\\", std::string(1, e), " inside a character class is not supported"));
          }
          out += absl::StrCat("[^", e == 'W' ? kWord : "0-9a-fA-F", "]");
          ++i;
          continue;
        case 'b':
        case 'B':
        case 'Z':
          if (in_class) break;  // \b in a class is a backspace
          if (e == 'Z') {
            out += "(?=\\n?\\z)";
          } else {
            const std::string w = absl::StrCat("[", kWord, "]");
            out += e == 'b' ? absl::StrCat("(?:(?<!", w, ")(?=", w, ")|(?<=", w, ")(?!", w, "))")
                            : absl::StrCat("(?:(?<!", w, ")(?!", w, ")|(?<=", w, ")(?=", w, "))");
          }
          ++i;
          continue;
        default:
          break;
      }
      if (!set.empty()) {
        out += in_class ? set : absl::StrCat("[", set, "]");
        ++i;
        continue;
      }
      if ((e == 'p' || e == 'P' || e == 'x' || e == 'u') && i + 2 < pattern.size() &&
          pattern[i + 2] == '{') {
        const size_t close = pattern.find('}', i + 2);
        if (close == std::string::npos)
          return absl::InvalidArgumentError("unterminated \\p{ or \\x{");
        out += pattern.substr(i, close - i + 1);
        i = close;
        continue;
      }
      out += pattern.substr(i, 2);
      ++i;
      continue;
    }
    if (class_depth > 0) {
      if (c == '[') ++class_depth;
      if (c == ']') --class_depth;
      if (fold_stack.back() && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
        return absl::InvalidArgumentError(
            "letters in a character class inside (?i:...) are not supported");
      }
      out += c;
      continue;
    }
    if (c == '[') {
      ++class_depth;
      out += c;
      // A ']' right after '[' or '[^' is literal.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += "\\]", ++i;
      continue;
    }
    if (c == '(') {
      if (pattern.compare(i, 4, "(?i:") == 0) {
        fold_stack.push_back(true);
        out += "(?:";
        i += 3;
        continue;
      }
      if (pattern.compare(i, 2, "(?") == 0 && i + 2 < pattern.size() &&
          std::string_view(":=!<").find(pattern[i + 2]) == std::string_view::npos) {
        return absl::InvalidArgumentError(
            "inline flag groups other than (?i:...) are not supported");
      }
      fold_stack.push_back(fold_stack.back());
      out += c;
      continue;
    }
    if (c == ')') {
      if (fold_stack.size() > 1) fold_stack.pop_back();
      out += c;
      continue;
    }
    if (c == '.') {
      out += "[^\\n]";
      continue;
    }
    if (c == '^') {
      out += "(?:\\A|(?<=\\n))";
      continue;
    }
    if (c == '$') {
      out += "(?:\\z|(?=\\n))";
      continue;
    }
    if (fold_stack.back() && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
      const char lower = static_cast<char>(c | 0x20);
      out += absl::StrCat("[", std::string(1, lower), std::string(1, lower - 32), "]");
      continue;
    }
    out += c;
  }
  return out;
}

// Escapes a literal for an ICU pattern.
std::string QuoteRegex(const std::string& literal) {
  std::string out;
  for (char c : literal) {
    if (std::string_view("\\^$.|?*+()[]{}-&/#~ ").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

// Every match of `pattern` in `text`, left to right. An ICU failure (e.g. its
// backtracking stack limit) is reported in *error, never ignored.
namespace {

// ICU's match callback: spends one unit of the run's budget and asks the
// caller's stop check; false stops the match (U_REGEX_STOPPED_BY_CALLER).
UBool U_CALLCONV OnRegexProgress(const void* context, int32_t /*steps*/) {
  auto* run = static_cast<EncodeRun*>(const_cast<void*>(context));
  if (--run->regex_units_left < 0) return false;
  if (absl::Status stop = CheckStop(run->stop); !stop.ok()) {
    run->error = std::move(stop);
    return false;
  }
  return true;
}

}  // namespace

std::vector<Match> FindAll(const icu::RegexPattern& pattern, const icu::UnicodeString& text,
                           std::string_view where, EncodeRun* run) {
  std::vector<Match> out;
  if (!run->error.ok()) return out;
  UErrorCode status = U_ZERO_ERROR;
  std::unique_ptr<icu::RegexMatcher> m(pattern.matcher(text, status));
  if (U_SUCCESS(status)) m->setMatchCallback(OnRegexProgress, run, status);
  while (U_SUCCESS(status) && m->find(status)) {
    out.push_back({m->start(status), m->end(status)});
  }
  if (U_FAILURE(status) && run->error.ok()) {
    if (status == U_REGEX_STACK_OVERFLOW) {
      run->error = absl::ResourceExhaustedError(
          absl::StrCat(absl::string_view(where.data(), where.size()),
                       ": the regex needs more backtracking memory than ICU allows on this text"));
    } else if (status == U_REGEX_STOPPED_BY_CALLER) {
      run->error = absl::ResourceExhaustedError(
          absl::StrCat(absl::string_view(where.data(), where.size()), ": the regex gave up after ",
                       kMaxRegexUnitsPerEncode * 10'000,
                       " match steps on this text (a pattern that backtracks catastrophically?)"));
    } else {
      run->error =
          absl::InternalError(absl::StrCat(absl::string_view(where.data(), where.size()),
                                           ": regex matching failed: ", u_errorName(status)));
    }
  }
  return out;
}

}  // namespace memaudit::tokenizer_internal
