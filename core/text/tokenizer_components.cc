#include "core/text/tokenizer_components.h"

#include <unicode/locid.h>
#include <unicode/normalizer2.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "core/text/tokenizer_unicode.h"

namespace memaudit::tokenizer_internal {
namespace {

// Debian's Abseil has its own string_view; this converts std's to it.
absl::string_view AV(std::string_view v) { return absl::string_view(v.data(), v.size()); }

}  // namespace

absl::StatusOr<const Json*> Field(const Json& obj, std::string_view key, const Ctx& ctx) {
  auto it = obj.find(key);
  if (it == obj.end()) return ctx.Error(absl::StrCat("missing \"", AV(key), "\""));
  return &*it;
}

absl::StatusOr<std::string> StringField(const Json& obj, std::string_view key, const Ctx& ctx) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) {
    return ctx.Child(key).Error("must be a string");
  }
  return it->get<std::string>();
}

absl::StatusOr<bool> BoolField(const Json& obj, std::string_view key, bool fallback,
                               const Ctx& ctx) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return ctx.Child(key).Error("must be true or false");
  return it->get<bool>();
}

absl::StatusOr<std::string> TypeOf(const Json& obj, const Ctx& ctx) {
  if (!obj.is_object()) return ctx.Error("must be an object or null");
  return StringField(obj, "type", ctx);
}

absl::Status Unsupported(const Ctx& ctx, std::string_view type) {
  return ctx.Child("type").Error(absl::StrCat("\"", AV(type), "\" is not supported"));
}

// A tokenizer.json "pattern": {"String": ...} or {"Regex": ...}.
absl::StatusOr<std::shared_ptr<icu::RegexPattern>> CompilePattern(const Json& pattern,
                                                                  const Ctx& ctx) {
  if (!pattern.is_object()) return ctx.Error("must be {\"String\": ...} or {\"Regex\": ...}");
  std::string icu_pattern;
  if (auto it = pattern.find("String"); it != pattern.end() && it->is_string()) {
    icu_pattern = QuoteRegex(it->get<std::string>());
  } else if (auto it = pattern.find("Regex"); it != pattern.end() && it->is_string()) {
    absl::StatusOr<std::string> translated = TranslateRegex(it->get<std::string>());
    if (!translated.ok())
      return ctx.Child("Regex").Error(std::string(translated.status().message()));
    icu_pattern = *translated;
  } else {
    return ctx.Error("must be {\"String\": ...} or {\"Regex\": ...}");
  }
  UErrorCode status = U_ZERO_ERROR;
  UParseError parse_error;
  std::shared_ptr<icu::RegexPattern> compiled(
      icu::RegexPattern::compile(FromUtf8(icu_pattern), 0, parse_error, status));
  if (U_FAILURE(status)) {
    return ctx.Error(absl::StrCat("the regex does not compile (", u_errorName(status),
                                  " at offset ", parse_error.offset, ")"));
  }
  return compiled;
}

// --- Normalizers --------------------------------------------------------------

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  icu::UnicodeString Apply(const icu::UnicodeString& text, EncodeRun* run) const override {
    icu::UnicodeString s = text;
    for (const auto& p : parts_) s = p->Apply(s, run);
    return s;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

class UnicodeFormNormalizer : public Normalizer {
 public:
  explicit UnicodeFormNormalizer(const icu::Normalizer2* n) : n_(n) {}
  icu::UnicodeString Apply(const icu::UnicodeString& text, EncodeRun* run) const override {
    UErrorCode status = U_ZERO_ERROR;
    icu::UnicodeString out = n_->normalize(text, status);
    if (U_FAILURE(status) && run->error.ok()) {
      run->error = absl::InternalError(absl::StrCat("normalization failed: ", u_errorName(status)));
    }
    return out;
  }

 private:
  const icu::Normalizer2* n_;  // ICU's singleton, thread-safe
};

// Full Unicode lower-casing of the whole string (final sigma included), as
// JavaScript's toLowerCase and Python's str.lower do.
class LowercaseNormalizer : public Normalizer {
 public:
  icu::UnicodeString Apply(const icu::UnicodeString& text, EncodeRun* /*run*/) const override {
    icu::UnicodeString s = text;
    s.toLower(icu::Locale::getRoot());
    return s;
  }
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  icu::UnicodeString Apply(const icu::UnicodeString& text, EncodeRun* /*run*/) const override {
    icu::UnicodeString s = text;
    if (left_) s = TrimStart(s);
    if (right_) s = TrimEnd(s);
    return s;
  }

 private:
  bool left_, right_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(icu::UnicodeString prefix) : prefix_(std::move(prefix)) {}
  icu::UnicodeString Apply(const icu::UnicodeString& text, EncodeRun* /*run*/) const override {
    return prefix_ + text;
  }

 private:
  icu::UnicodeString prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::shared_ptr<icu::RegexPattern> pattern, std::string where,
                    icu::UnicodeString content)
      : pattern_(std::move(pattern)), where_(std::move(where)), content_(std::move(content)) {}
  icu::UnicodeString Apply(const icu::UnicodeString& text, EncodeRun* run) const override {
    icu::UnicodeString out;
    int32_t prev = 0;
    for (const Match& m : FindAll(*pattern_, text, where_, run)) {
      out.append(text, prev, m.start - prev);
      out.append(content_);
      prev = m.end;
      if (out.length() > run->max_normalized_length) {
        run->error = absl::ResourceExhaustedError(absl::StrCat(
            where_, ": its replacements grow the text past ", run->max_normalized_length,
            " characters (", EncodeRun::kMaxNormalizedGrowth,
            " times the text's length): no real tokenizer does that"));
        return out;
      }
    }
    out.append(text, prev, text.length() - prev);
    return out;
  }

 private:
  std::shared_ptr<icu::RegexPattern> pattern_;
  std::string where_;  // the pattern's JSON path, for errors
  icu::UnicodeString content_;
};

absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const Json& j, const Ctx& ctx) {
  absl::StatusOr<std::string> type = TypeOf(j, ctx);
  if (!type.ok()) return type.status();
  UErrorCode status = U_ZERO_ERROR;
  if (*type == "Sequence") {
    absl::StatusOr<Ctx> inner = ctx.EnterSequence();
    if (!inner.ok()) return inner.status();
    absl::StatusOr<const Json*> list = Field(j, "normalizers", ctx);
    if (!list.ok()) return list.status();
    if (!(*list)->is_array()) return ctx.Child("normalizers").Error("must be an array");
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (size_t i = 0; i < (*list)->size(); ++i) {
      const Json& item = (**list)[i];
      if (item.is_null()) continue;
      absl::StatusOr<std::unique_ptr<Normalizer>> part =
          ParseNormalizer(item, inner->Child("normalizers").Index(i));
      if (!part.ok()) return part.status();
      parts.push_back(*std::move(part));
    }
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  const icu::Normalizer2* form = nullptr;
  if (*type == "NFC") form = icu::Normalizer2::getNFCInstance(status);
  if (*type == "NFD") form = icu::Normalizer2::getNFDInstance(status);
  if (*type == "NFKC") form = icu::Normalizer2::getNFKCInstance(status);
  if (*type == "NFKD") form = icu::Normalizer2::getNFKDInstance(status);
  if (form != nullptr) {
    if (U_FAILURE(status))
      return absl::InternalError(absl::StrCat("ICU normalizer: ", u_errorName(status)));
    return std::make_unique<UnicodeFormNormalizer>(form);
  }
  if (*type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (*type == "Strip") {
    absl::StatusOr<bool> left = BoolField(j, "strip_left", false, ctx);
    absl::StatusOr<bool> right = BoolField(j, "strip_right", false, ctx);
    if (!left.ok()) return left.status();
    if (!right.ok()) return right.status();
    return std::make_unique<StripNormalizer>(*left, *right);
  }
  if (*type == "Prepend") {
    absl::StatusOr<std::string> prepend = StringField(j, "prepend", ctx);
    if (!prepend.ok()) return prepend.status();
    return std::make_unique<PrependNormalizer>(FromUtf8(*prepend));
  }
  if (*type == "Replace") {
    absl::StatusOr<const Json*> pattern = Field(j, "pattern", ctx);
    if (!pattern.ok()) return pattern.status();
    absl::StatusOr<std::shared_ptr<icu::RegexPattern>> compiled =
        CompilePattern(**pattern, ctx.Child("pattern"));
    if (!compiled.ok()) return compiled.status();
    absl::StatusOr<std::string> content = StringField(j, "content", ctx);
    if (!content.ok()) return content.status();
    if (content->find('$') != std::string::npos) {
      // The reference substitutes $&, $1, ... (JavaScript's replaceAll); the
      // Rust library inserts the content literally.
      return ctx.Child("content").Error("a content with '$' is not supported");
    }
    return std::make_unique<ReplaceNormalizer>(*std::move(compiled), ctx.Child("pattern").path,
                                               FromUtf8(*content));
  }
  return Unsupported(ctx, *type);
}

// --- Pre-tokenizers -------------------------------------------------------------

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void Apply(const icu::UnicodeString& piece, Pieces* out, EncodeRun* run) const override {
    Pieces current = {piece};
    for (const auto& p : parts_) {
      Pieces next;
      for (const auto& s : current) p->Apply(s, &next, run);
      current = std::move(next);
    }
    for (auto& s : current) out->push_back(std::move(s));
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  enum class Mode { kKeepMatches, kKeepGaps, kIsolated };
  SplitPreTokenizer(std::shared_ptr<icu::RegexPattern> pattern, std::string where, Mode mode)
      : pattern_(std::move(pattern)), where_(std::move(where)), mode_(mode) {}
  void Apply(const icu::UnicodeString& piece, Pieces* out, EncodeRun* run) const override {
    int32_t prev = 0;
    for (const Match& m : FindAll(*pattern_, piece, where_, run)) {
      if (mode_ != Mode::kKeepMatches && m.start > prev)
        out->emplace_back(piece, prev, m.start - prev);
      if (mode_ != Mode::kKeepGaps && m.end > m.start)
        out->emplace_back(piece, m.start, m.end - m.start);
      prev = m.end;
    }
    if (mode_ != Mode::kKeepMatches && prev < piece.length()) out->emplace_back(piece, prev);
  }

 private:
  std::shared_ptr<icu::RegexPattern> pattern_;
  std::string where_;  // the pattern's JSON path, for errors
  Mode mode_;
};

// GPT-2's byte-to-unicode table: each byte becomes one printable character.
const std::vector<std::string>& ByteToUnicode() {
  static const std::vector<std::string>* table = [] {
    std::vector<int> bs;
    for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
    for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
    for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
    std::vector<UChar32> map(256, -1);
    for (int b : bs) map[b] = b;
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      if (map[b] < 0) map[b] = 256 + n++;
    }
    auto* out = new std::vector<std::string>(256);
    for (int b = 0; b < 256; ++b) (*out)[b] = ToUtf8(icu::UnicodeString(map[b]));
    return out;
  }();
  return *table;
}

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::shared_ptr<icu::RegexPattern> pattern)
      : add_prefix_space_(add_prefix_space), pattern_(std::move(pattern)) {}
  void Apply(const icu::UnicodeString& piece, Pieces* out, EncodeRun* run) const override {
    icu::UnicodeString text = piece;
    if (add_prefix_space_ && !text.startsWith(icu::UnicodeString(u' '))) text.insert(0, u' ');
    if (pattern_ == nullptr) {
      out->push_back(Encode(text));
      return;
    }
    for (const Match& m : FindAll(*pattern_, text, "ByteLevel's GPT-2 split", run)) {
      if (m.end > m.start)
        out->push_back(Encode(icu::UnicodeString(text, m.start, m.end - m.start)));
    }
  }

  // The GPT-2 split that use_regex applies; \s is JavaScript's, as in the
  // reference (which runs this pattern natively).
  static std::string Gpt2Pattern() {
    const std::string ws = kJsWhitespaceClassBody;
    return absl::StrCat("'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^", ws, "\\p{L}\\p{N}]+|[",
                        ws, "]+(?![^", ws, "])|[", ws, "]+");
  }

 private:
  static icu::UnicodeString Encode(const icu::UnicodeString& s) {
    const std::string bytes = ToUtf8(s);
    std::string mapped;
    for (unsigned char b : bytes) mapped += ByteToUnicode()[b];
    return FromUtf8(mapped);
  }
  bool add_prefix_space_;
  std::shared_ptr<icu::RegexPattern> pattern_;
};

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const Json& j, const Ctx& ctx) {
  absl::StatusOr<std::string> type = TypeOf(j, ctx);
  if (!type.ok()) return type.status();
  if (*type == "Sequence") {
    absl::StatusOr<Ctx> inner = ctx.EnterSequence();
    if (!inner.ok()) return inner.status();
    absl::StatusOr<const Json*> list = Field(j, "pretokenizers", ctx);
    if (!list.ok()) return list.status();
    if (!(*list)->is_array()) return ctx.Child("pretokenizers").Error("must be an array");
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (size_t i = 0; i < (*list)->size(); ++i) {
      const Json& item = (**list)[i];
      if (item.is_null()) continue;
      absl::StatusOr<std::unique_ptr<PreTokenizer>> part =
          ParsePreTokenizer(item, inner->Child("pretokenizers").Index(i));
      if (!part.ok()) return part.status();
      parts.push_back(*std::move(part));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  if (*type == "ByteLevel") {
    absl::StatusOr<bool> prefix = BoolField(j, "add_prefix_space", false, ctx);
    if (!prefix.ok()) return prefix.status();
    absl::StatusOr<bool> use_regex = BoolField(j, "use_regex", true, ctx);
    if (!use_regex.ok()) return use_regex.status();
    std::shared_ptr<icu::RegexPattern> pattern;
    if (*use_regex) {
      UErrorCode status = U_ZERO_ERROR;
      UParseError parse_error;
      pattern.reset(icu::RegexPattern::compile(FromUtf8(ByteLevelPreTokenizer::Gpt2Pattern()), 0,
                                               parse_error, status));
      if (U_FAILURE(status)) return absl::InternalError("the GPT-2 pattern does not compile");
    }
    return std::make_unique<ByteLevelPreTokenizer>(*prefix, std::move(pattern));
  }
  if (*type == "Split") {
    absl::StatusOr<const Json*> pattern = Field(j, "pattern", ctx);
    if (!pattern.ok()) return pattern.status();
    absl::StatusOr<std::shared_ptr<icu::RegexPattern>> compiled =
        CompilePattern(**pattern, ctx.Child("pattern"));
    if (!compiled.ok()) return compiled.status();
    absl::StatusOr<bool> invert = BoolField(j, "invert", false, ctx);
    if (!invert.ok()) return invert.status();
    absl::StatusOr<std::string> behavior = StringField(j, "behavior", ctx);
    if (!behavior.ok()) return behavior.status();
    SplitPreTokenizer::Mode mode;
    UErrorCode status = U_ZERO_ERROR;
    std::unique_ptr<icu::RegexMatcher> probe((*compiled)->matcher(status));
    const int groups = U_SUCCESS(status) ? probe->groupCount() : 0;
    if (*behavior == "Removed" && !*invert && ((*pattern)->contains("String") || groups > 0)) {
      // The reference splits with JavaScript's String.split, which keeps
      // what capturing groups match (and it wraps a String pattern in one);
      // the Rust library drops the separators. No one answer to match.
      return ctx.Child("pattern").Error(
          "a String pattern or a Regex with capturing groups is not supported with behavior "
          "Removed (use a non-capturing (?:...) Regex)");
    }
    if (*behavior == "Removed") {
      mode = *invert ? SplitPreTokenizer::Mode::kKeepMatches : SplitPreTokenizer::Mode::kKeepGaps;
    } else if (*behavior == "Isolated" && !*invert) {
      mode = SplitPreTokenizer::Mode::kIsolated;
    } else {
      return ctx.Child("behavior")
          .Error(absl::StrCat("\"", *behavior, "\"", *invert ? " with invert" : "",
                              " is not supported (Removed, or Isolated without invert)"));
    }
    return std::make_unique<SplitPreTokenizer>(*std::move(compiled), ctx.Child("pattern").path,
                                               mode);
  }
  return Unsupported(ctx, *type);
}

}  // namespace memaudit::tokenizer_internal
