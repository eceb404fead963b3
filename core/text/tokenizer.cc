#include "core/text/tokenizer.h"

#include <unicode/regex.h>
#include <unicode/unistr.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <limits>
#include <queue>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/text/tokenizer_components.h"
#include "core/text/tokenizer_unicode.h"
#include "core/text/utf8.h"
#include "nlohmann/json.hpp"

namespace memaudit {
namespace {

using tokenizer_internal::BoolField;
using tokenizer_internal::ByteToUnicode;
using tokenizer_internal::CompilePattern;
using tokenizer_internal::Ctx;
using tokenizer_internal::EncodeRun;
using tokenizer_internal::Field;
using tokenizer_internal::FindAll;
using tokenizer_internal::FromUtf8;
using tokenizer_internal::IsJsWhitespace;
using tokenizer_internal::Json;
using tokenizer_internal::kJsWhitespaceClassBody;
using tokenizer_internal::Match;
using tokenizer_internal::Normalizer;
using tokenizer_internal::ParseNormalizer;
using tokenizer_internal::ParsePreTokenizer;
using tokenizer_internal::Pieces;
using tokenizer_internal::PreTokenizer;
using tokenizer_internal::QuoteRegex;
using tokenizer_internal::StringField;
using tokenizer_internal::ToUtf8;
using tokenizer_internal::TranslateRegex;
using tokenizer_internal::TrimEnd;
using tokenizer_internal::TrimStart;
using tokenizer_internal::TypeOf;
using tokenizer_internal::Unsupported;

// Debian's Abseil has its own string_view; this converts std's to it.
absl::string_view AV(std::string_view v) { return absl::string_view(v.data(), v.size()); }

// --- Post-processors ------------------------------------------------------------

// A single-sequence template: ids before and after the sequence's.
struct Template {
  std::vector<int64_t> before, after;
};

absl::StatusOr<int64_t> IdOfPair(const Json& j, const Ctx& ctx) {
  if (!j.is_array() || j.size() != 2 || !j[1].is_number_integer()) {
    return ctx.Error("must be [token, id]");
  }
  return j[1].get<int64_t>();
}

absl::Status ParsePostProcessor(const Json& j, const Ctx& ctx, Template* t) {
  absl::StatusOr<std::string> type = TypeOf(j, ctx);
  if (!type.ok()) return type.status();
  if (*type == "ByteLevel") return absl::OkStatus();
  if (*type == "Sequence") {
    absl::StatusOr<Ctx> inner = ctx.EnterSequence();
    if (!inner.ok()) return inner.status();
    absl::StatusOr<const Json*> list = Field(j, "processors", ctx);
    if (!list.ok()) return list.status();
    if (!(*list)->is_array()) return ctx.Child("processors").Error("must be an array");
    for (size_t i = 0; i < (*list)->size(); ++i) {
      if ((**list)[i].is_null()) continue;
      absl::Status s = ParsePostProcessor((**list)[i], inner->Child("processors").Index(i), t);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (*type == "RobertaProcessing" || *type == "BertProcessing") {
    absl::StatusOr<const Json*> cls = Field(j, "cls", ctx);
    if (!cls.ok()) return cls.status();
    absl::StatusOr<const Json*> sep = Field(j, "sep", ctx);
    if (!sep.ok()) return sep.status();
    absl::StatusOr<int64_t> cls_id = IdOfPair(**cls, ctx.Child("cls"));
    if (!cls_id.ok()) return cls_id.status();
    absl::StatusOr<int64_t> sep_id = IdOfPair(**sep, ctx.Child("sep"));
    if (!sep_id.ok()) return sep_id.status();
    t->before.insert(t->before.begin(), *cls_id);
    t->after.push_back(*sep_id);
    return absl::OkStatus();
  }
  if (*type == "TemplateProcessing") {
    absl::StatusOr<const Json*> single = Field(j, "single", ctx);
    if (!single.ok()) return single.status();
    const Ctx single_ctx = ctx.Child("single");
    if (!(*single)->is_array()) return single_ctx.Error("must be an array");
    const Json* specials = nullptr;
    if (auto it = j.find("special_tokens"); it != j.end() && it->is_object()) specials = &*it;
    Template local;
    bool seen_sequence = false;
    for (size_t i = 0; i < (*single)->size(); ++i) {
      const Json& item = (**single)[i];
      const Ctx item_ctx = single_ctx.Index(i);
      if (item.is_object() && item.contains("Sequence")) {
        if (seen_sequence) return item_ctx.Error("the sequence appears twice");
        seen_sequence = true;
        continue;
      }
      if (!item.is_object() || !item.contains("SpecialToken") ||
          !item["SpecialToken"].is_object() || !item["SpecialToken"].contains("id") ||
          !item["SpecialToken"]["id"].is_string()) {
        return item_ctx.Error("must be {\"SpecialToken\": {\"id\": ...}} or {\"Sequence\": ...}");
      }
      const std::string name = item["SpecialToken"]["id"].get<std::string>();
      if (specials == nullptr || !specials->contains(name) || !(*specials)[name].contains("ids") ||
          !(*specials)[name]["ids"].is_array()) {
        return ctx.Child("special_tokens")
            .Error(absl::StrCat("has no ids for \"", name, "\" (used by single[", i, "])"));
      }
      for (const Json& id : (*specials)[name]["ids"]) {
        if (!id.is_number_integer())
          return ctx.Child("special_tokens").Child(name).Error("ids must be integers");
        (seen_sequence ? local.after : local.before).push_back(id.get<int64_t>());
      }
    }
    if (!seen_sequence) return single_ctx.Error("has no {\"Sequence\": ...}");
    t->before.insert(t->before.begin(), local.before.begin(), local.before.end());
    t->after.insert(t->after.end(), local.after.begin(), local.after.end());
    return absl::OkStatus();
  }
  return Unsupported(ctx, *type);
}

struct AddedToken {
  std::string content;  // UTF-8, as in the file
  int64_t id = 0;
  bool lstrip = false, rstrip = false, normalized = false;
};

}  // namespace

// ---------------------------------------------------------------------------

struct Tokenizer::Impl {
  std::unique_ptr<Normalizer> normalizer;             // may be null
  std::unique_ptr<PreTokenizer> pre_tokenizer;        // may be null
  absl::flat_hash_map<std::string, int64_t> vocab;    // model vocab, then added tokens
  absl::flat_hash_map<std::string, int> merge_ranks;  // key: a + '\xff' + b
  std::string end_of_word_suffix;
  std::optional<int64_t> unk_id;
  bool ignore_merges = false;
  std::vector<AddedToken> added;
  // Contents matched in the raw text, and in the normalized text.
  std::vector<std::string> raw_contents, normalized_contents;
  // Every raw or normalized content → its token.
  absl::flat_hash_map<std::string, size_t> added_by_content;
  Template post;

  static std::string MergeKey(const std::string& a, const std::string& b) {
    std::string key = a;
    key += '\xff';
    key += b;
    return key;
  }

  // Splits `text` at the leftmost-longest occurrences of `contents`.
  static std::vector<std::string> SplitOnAdded(const std::string& text,
                                               const std::vector<std::string>& contents) {
    std::vector<std::string> sections;
    if (contents.empty()) {
      sections.push_back(text);
      return sections;
    }
    size_t start = 0, i = 0;
    while (i < text.size()) {
      size_t best = 0;
      for (const std::string& c : contents) {
        if (c.size() > best && text.compare(i, c.size(), c) == 0) best = c.size();
      }
      if (best == 0) {
        ++i;
        continue;
      }
      if (i > start) sections.push_back(text.substr(start, i - start));
      sections.push_back(text.substr(i, best));
      i += best;
      start = i;
    }
    if (start < text.size()) sections.push_back(text.substr(start));
    return sections;
  }

  // Applies added tokens' lstrip/rstrip to the neighbouring sections.
  void StripAroundAdded(std::vector<std::string>* sections) const {
    for (size_t i = 0; i < sections->size(); ++i) {
      auto it = added_by_content.find((*sections)[i]);
      if (it == added_by_content.end()) continue;
      const AddedToken& token = added[it->second];
      if (token.lstrip && i > 0) (*sections)[i - 1] = ToUtf8(TrimEnd(FromUtf8((*sections)[i - 1])));
      if (token.rstrip && i + 1 < sections->size()) {
        (*sections)[i + 1] = ToUtf8(TrimStart(FromUtf8((*sections)[i + 1])));
      }
    }
  }

  void Bpe(const std::string& word, std::vector<int64_t>* ids) const {
    if (word.empty()) return;
    if (ignore_merges) {
      if (auto it = vocab.find(word); it != vocab.end()) {
        ids->push_back(it->second);
        return;
      }
    }
    std::vector<std::string> symbols;
    const auto* p = reinterpret_cast<const uint8_t*>(word.data());
    const int32_t n = static_cast<int32_t>(word.size());
    for (int32_t i = 0; i < n;) {
      const int32_t start = i;
      UChar32 c;
      U8_NEXT(p, i, n, c);
      symbols.push_back(word.substr(start, i - start));
    }
    symbols.back() += end_of_word_suffix;
    // Merge the lowest-ranked adjacent pair, the leftmost among equals,
    // until none has a rank: a heap of (rank, left symbol's index) over a
    // linked list, O(n log n) in the word's length (a prompt may be one long
    // word). Entries whose pair has changed since are skipped when popped.
    const int count = static_cast<int>(symbols.size());
    std::vector<int> prev(count), next(count);
    std::vector<bool> alive(count, true);
    for (int i = 0; i < count; ++i) {
      prev[i] = i - 1;
      next[i] = i + 1 < count ? i + 1 : -1;
    }
    using Entry = std::pair<int, int>;  // (rank, index)
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
    auto rank_at = [&](int i) -> int {
      if (i < 0 || next[i] < 0) return -1;
      auto it = merge_ranks.find(MergeKey(symbols[i], symbols[next[i]]));
      return it == merge_ranks.end() ? -1 : it->second;
    };
    auto push = [&](int i) {
      const int rank = rank_at(i);
      if (rank >= 0) heap.emplace(rank, i);
    };
    for (int i = 0; i + 1 < count; ++i) push(i);
    while (!heap.empty()) {
      const auto [rank, i] = heap.top();
      heap.pop();
      if (!alive[i] || rank_at(i) != rank) continue;
      const int j = next[i];
      symbols[i] += symbols[j];
      alive[j] = false;
      next[i] = next[j];
      if (next[i] >= 0) prev[next[i]] = i;
      push(prev[i]);
      push(i);
    }
    std::vector<std::string> merged;
    for (int i = 0; i >= 0; i = next[i]) merged.push_back(std::move(symbols[i]));
    symbols = std::move(merged);
    for (const std::string& s : symbols) {
      if (auto it = vocab.find(s); it != vocab.end()) {
        ids->push_back(it->second);
      } else if (unk_id.has_value()) {
        ids->push_back(*unk_id);
      }
    }
  }

  void EncodeNormalizedSection(const std::string& text, std::vector<int64_t>* ids,
                               EncodeRun* run) const {
    Pieces pieces;
    if (pre_tokenizer != nullptr) {
      pre_tokenizer->Apply(FromUtf8(text), &pieces, run);
      if (!run->error.ok()) return;
      for (const auto& piece : pieces) Bpe(ToUtf8(piece), ids);
    } else {
      Bpe(text, ids);
    }
  }

  absl::StatusOr<std::vector<int64_t>> EncodeText(std::string_view text,
                                                  const StopCheck& stop) const {
    EncodeRun run;
    run.stop = stop;
    run.max_normalized_length = EncodeRun::kMaxNormalizedLengthFloor +
                                EncodeRun::kMaxNormalizedGrowth * static_cast<int64_t>(text.size());
    std::vector<int64_t> ids;
    std::vector<std::string> sections = SplitOnAdded(std::string(text), raw_contents);
    StripAroundAdded(&sections);
    for (const std::string& section : sections) {
      if (section.empty()) continue;
      if (auto it = added_by_content.find(section); it != added_by_content.end()) {
        ids.push_back(added[it->second].id);
        continue;
      }
      std::string normalized =
          normalizer != nullptr ? ToUtf8(normalizer->Apply(FromUtf8(section), &run)) : section;
      if (!run.error.ok()) return run.error;
      if (normalized.empty()) continue;
      std::vector<std::string> subsections = SplitOnAdded(normalized, normalized_contents);
      StripAroundAdded(&subsections);
      for (const std::string& sub : subsections) {
        if (sub.empty()) continue;
        if (auto it = added_by_content.find(sub); it != added_by_content.end()) {
          ids.push_back(added[it->second].id);
          continue;
        }
        EncodeNormalizedSection(sub, &ids, &run);
        if (!run.error.ok()) return run.error;
      }
    }
    return ids;
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

namespace {

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot be read"));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// CLIPTokenizer reads merges.txt lines [1, 49152 - 256 - 2]: the vocabulary
// is 256 bytes, their 256 "</w>" forms, the merges and the two specials.
constexpr size_t kClipMaxMerges = 49152 - 256 - 2;

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& tokenizer_json_path) {
  auto text = ReadTextFile(tokenizer_json_path);
  if (!text.ok()) return text.status();
  return FromJson(*text, tokenizer_json_path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json_text,
                                                               std::string_view source_name) {
  auto prefixed = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat(AV(source_name), ": ", s.message()));
  };
  Json root;
  try {
    root = Json::parse(json_text);
  } catch (const Json::parse_error& e) {
    // The byte, not nlohmann's message: that quotes the bytes it last read,
    // which need not be UTF-8 (and error texts travel in proto strings).
    return absl::InvalidArgumentError(
        absl::StrCat(AV(source_name), ": not valid JSON (at byte ", e.byte, ")"));
  } catch (const Json::exception& e) {  // out_of_range.406: 1e99999
    return absl::InvalidArgumentError(
        absl::StrCat(AV(source_name), ": not valid JSON (",
                     e.id == 406 ? "a number out of range" : absl::StrCat("error ", e.id), ")"));
  }
  if (!root.is_object())
    return absl::InvalidArgumentError(absl::StrCat(AV(source_name), ": not a JSON object"));
  auto impl = std::make_unique<Impl>();

  if (auto it = root.find("normalizer"); it != root.end() && !it->is_null()) {
    absl::StatusOr<std::unique_ptr<Normalizer>> n = ParseNormalizer(*it, Ctx{"normalizer"});
    if (!n.ok()) return prefixed(n.status());
    impl->normalizer = *std::move(n);
  }
  if (auto it = root.find("pre_tokenizer"); it != root.end() && !it->is_null()) {
    absl::StatusOr<std::unique_ptr<PreTokenizer>> p = ParsePreTokenizer(*it, Ctx{"pre_tokenizer"});
    if (!p.ok()) return prefixed(p.status());
    impl->pre_tokenizer = *std::move(p);
  }
  if (auto it = root.find("post_processor"); it != root.end() && !it->is_null()) {
    absl::Status s = ParsePostProcessor(*it, Ctx{"post_processor"}, &impl->post);
    if (!s.ok()) return prefixed(s);
  }

  // The model.
  const Ctx model_ctx{"model"};
  auto model_it = root.find("model");
  if (model_it == root.end() || !model_it->is_object()) {
    return prefixed(model_ctx.Error("must be an object"));
  }
  const Json& model = *model_it;
  if (auto t = model.find("type"); t != model.end() && (!t->is_string() || *t != "BPE")) {
    // Not t->dump(): it recurses once per nesting level of the value.
    return prefixed(t->is_string() ? Unsupported(model_ctx, t->get<std::string>())
                                   : model_ctx.Child("type").Error("must be the string \"BPE\""));
  }
  if (auto d = model.find("dropout"); d != model.end() && !d->is_null()) {
    return prefixed(
        model_ctx.Child("dropout").Error("must be null (BPE dropout is not supported)"));
  }
  for (const char* flag : {"byte_fallback", "fuse_unk"}) {
    absl::StatusOr<bool> on = BoolField(model, flag, false, model_ctx);
    if (!on.ok()) return prefixed(on.status());
    if (*on) return prefixed(model_ctx.Child(flag).Error("true is not supported"));
  }
  if (auto c = model.find("continuing_subword_prefix");
      c != model.end() && !c->is_null() && !(c->is_string() && c->get<std::string>().empty())) {
    return prefixed(model_ctx.Child("continuing_subword_prefix").Error("must be empty or null"));
  }
  if (auto s = model.find("end_of_word_suffix"); s != model.end() && !s->is_null()) {
    if (!s->is_string())
      return prefixed(model_ctx.Child("end_of_word_suffix").Error("must be a string"));
    impl->end_of_word_suffix = s->get<std::string>();
  }
  absl::StatusOr<bool> ignore_merges = BoolField(model, "ignore_merges", false, model_ctx);
  if (!ignore_merges.ok()) return prefixed(ignore_merges.status());
  impl->ignore_merges = *ignore_merges;

  auto vocab_it = model.find("vocab");
  if (vocab_it == model.end() || !vocab_it->is_object()) {
    return prefixed(model_ctx.Child("vocab").Error("must be an object of token → id"));
  }
  impl->vocab.reserve(vocab_it->size());
  for (auto it = vocab_it->begin(); it != vocab_it->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0) {
      return prefixed(
          model_ctx.Child("vocab").Child(it.key()).Error("must be a non-negative integer"));
    }
    impl->vocab[it.key()] = it.value().get<int64_t>();
  }
  auto merges_it = model.find("merges");
  if (merges_it == model.end() || !merges_it->is_array()) {
    return prefixed(model_ctx.Child("merges").Error("must be an array"));
  }
  impl->merge_ranks.reserve(merges_it->size());
  for (size_t i = 0; i < merges_it->size(); ++i) {
    const Json& m = (*merges_it)[i];
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return prefixed(model_ctx.Child("merges").Index(i).Error("must be \"a b\" (one space)"));
      }
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      return prefixed(model_ctx.Child("merges").Index(i).Error("must be \"a b\" or [a, b]"));
    }
    // The first occurrence of a pair ranks.
    impl->merge_ranks.try_emplace(Impl::MergeKey(a, b), static_cast<int>(i));
  }

  // Added tokens (their ids override the vocabulary's, as in the reference).
  if (auto it = root.find("added_tokens"); it != root.end() && !it->is_null()) {
    const Ctx added_ctx{"added_tokens"};
    if (!it->is_array()) return prefixed(added_ctx.Error("must be an array"));
    for (size_t i = 0; i < it->size(); ++i) {
      const Json& a = (*it)[i];
      const Ctx ctx = added_ctx.Index(i);
      if (!a.is_object()) return prefixed(ctx.Error("must be an object"));
      AddedToken token;
      absl::StatusOr<std::string> content = StringField(a, "content", ctx);
      if (!content.ok()) return prefixed(content.status());
      if (content->empty()) return prefixed(ctx.Child("content").Error("must not be empty"));
      token.content = *content;
      auto id = a.find("id");
      if (id == a.end() || !id->is_number_integer() || id->get<int64_t>() < 0) {
        return prefixed(ctx.Child("id").Error("must be a non-negative integer"));
      }
      token.id = id->get<int64_t>();
      absl::StatusOr<bool> special = BoolField(a, "special", false, ctx);
      absl::StatusOr<bool> normalized = BoolField(a, "normalized", !special.value_or(false), ctx);
      absl::StatusOr<bool> lstrip = BoolField(a, "lstrip", false, ctx);
      absl::StatusOr<bool> rstrip = BoolField(a, "rstrip", false, ctx);
      absl::StatusOr<bool> single_word = BoolField(a, "single_word", false, ctx);
      for (const auto* s : {&special, &normalized, &lstrip, &rstrip, &single_word}) {
        if (!s->ok()) return prefixed(s->status());
      }
      if (*single_word) return prefixed(ctx.Child("single_word").Error("true is not supported"));
      token.lstrip = *lstrip;
      token.rstrip = *rstrip;
      token.normalized = *normalized;
      const size_t index = impl->added.size();
      impl->added.push_back(token);
      impl->vocab[token.content] = token.id;
      impl->added_by_content[token.content] = index;
      if (token.normalized && impl->normalizer != nullptr) {
        EncodeRun run;
        run.max_normalized_length +=
            EncodeRun::kMaxNormalizedGrowth * static_cast<int64_t>(token.content.size());
        const std::string n = ToUtf8(impl->normalizer->Apply(FromUtf8(token.content), &run));
        if (!run.error.ok()) {
          return prefixed(ctx.Child("content").Error(std::string(run.error.message())));
        }
        if (!n.empty()) {
          impl->normalized_contents.push_back(n);
          impl->added_by_content[n] = index;
        }
      } else {
        impl->raw_contents.push_back(token.content);
      }
    }
  }

  if (auto u = model.find("unk_token"); u != model.end() && !u->is_null()) {
    if (!u->is_string())
      return prefixed(model_ctx.Child("unk_token").Error("must be a string or null"));
    auto id = impl->vocab.find(u->get<std::string>());
    if (id == impl->vocab.end()) {
      return prefixed(
          model_ctx.Child("unk_token")
              .Error(absl::StrCat("\"", u->get<std::string>(), "\" is not in the vocabulary")));
    }
    impl->unk_id = id->second;
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadClipVocabAndMerges(
    const std::string& vocab_json_path, const std::string& merges_txt_path) {
  auto vocab_text = ReadTextFile(vocab_json_path);
  if (!vocab_text.ok()) return vocab_text.status();
  Json vocab = Json::parse(*vocab_text, nullptr, /*allow_exceptions=*/false);
  if (!vocab.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(vocab_json_path, ": not a JSON object of token -> id"));
  }
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat(vocab_json_path, ": the id of \"", token, "\" is not an integer"));
    }
  }
  auto merges_text = ReadTextFile(merges_txt_path);
  if (!merges_text.ok()) return merges_text.status();
  Json merges = Json::array();
  std::istringstream lines(*merges_text);
  std::string line;
  for (int number = 1; std::getline(lines, line) && merges.size() < kClipMaxMerges; ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (number == 1 && line.rfind("#version", 0) == 0) continue;
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(merges_txt_path, " line ", number,
                                                     ": a merge is two tokens separated by "
                                                     "one space"));
    }
    merges.push_back(line);
  }
  constexpr const char* kBos = "<|startoftext|>";
  constexpr const char* kEos = "<|endoftext|>";
  for (const char* special : {kBos, kEos}) {
    if (!vocab.contains(special)) {
      return absl::InvalidArgumentError(
          absl::StrCat(vocab_json_path, ": the vocabulary has no ", special));
    }
  }
  const int64_t bos = vocab[kBos].get<int64_t>();
  const int64_t eos = vocab[kEos].get<int64_t>();
  auto added = [](int64_t id, const char* content) {
    return Json{{"id", id},        {"content", content}, {"single_word", false}, {"lstrip", false},
                {"rstrip", false}, {"normalized", true}, {"special", true}};
  };
  // The structure transformers' CLIPConverter writes.
  const Json json = {
      {"version", "1.0"},
      {"added_tokens", Json::array({added(bos, kBos), added(eos, kEos)})},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         Json::array({{{"type", "NFC"}},
                      {{"type", "Replace"}, {"pattern", {{"Regex", "\\s+"}}}, {"content", " "}},
                      {{"type", "Lowercase"}}})}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         Json::array(
             {{{"type", "Split"},
               {"pattern",
                {{"Regex", "'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"}}},
               {"behavior", "Removed"},
               {"invert", true}},
              {{"type", "ByteLevel"},
               {"add_prefix_space", false},
               {"trim_offsets", true},
               {"use_regex", true}}})}}},
      {"post_processor",
       {{"type", "RobertaProcessing"},
        {"sep", Json::array({kEos, eos})},
        {"cls", Json::array({kBos, bos})},
        {"trim_offsets", false},
        {"add_prefix_space", false}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", kEos},
        {"continuing_subword_prefix", ""},
        {"end_of_word_suffix", "</w>"},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"vocab", vocab},
        {"merges", merges}}},
  };
  const std::string source = absl::StrCat(vocab_json_path, " + ", merges_txt_path);
  return FromJson(json.dump(), source);
}

absl::StatusOr<std::vector<int64_t>> Tokenizer::Encode(std::string_view text,
                                                       const StopCheck& stop) const {
  if (!IsValidUtf8(text)) return absl::InvalidArgumentError("the text is not valid UTF-8");
  absl::StatusOr<std::vector<int64_t>> content = impl_->EncodeText(text, stop);
  if (!content.ok()) return content.status();
  std::vector<int64_t> ids = impl_->post.before;
  ids.insert(ids.end(), content->begin(), content->end());
  ids.insert(ids.end(), impl_->post.after.begin(), impl_->post.after.end());
  return ids;
}

absl::StatusOr<std::vector<int64_t>> Tokenizer::EncodeForModel(std::string_view text,
                                                               int max_length, int64_t pad_id,
                                                               const StopCheck& stop) const {
  const int specials = num_special_tokens();
  if (max_length < specials) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_length %d cannot hold the %d special tokens the tokenizer adds",
                        max_length, specials));
  }
  if (!IsValidUtf8(text)) return absl::InvalidArgumentError("the text is not valid UTF-8");
  absl::StatusOr<std::vector<int64_t>> content = impl_->EncodeText(text, stop);
  if (!content.ok()) return content.status();
  content->resize(std::min<size_t>(content->size(), static_cast<size_t>(max_length - specials)));
  std::vector<int64_t> ids = impl_->post.before;
  ids.insert(ids.end(), content->begin(), content->end());
  ids.insert(ids.end(), impl_->post.after.begin(), impl_->post.after.end());
  ids.resize(static_cast<size_t>(max_length), pad_id);
  return ids;
}

namespace {

// A vocabulary entry as text (Tokenizer::TextTokens).
std::string ReadableToken(std::string token, const std::string& end_of_word_suffix) {
  if (!end_of_word_suffix.empty() && token.size() > end_of_word_suffix.size() &&
      token.compare(token.size() - end_of_word_suffix.size(), end_of_word_suffix.size(),
                    end_of_word_suffix) == 0) {
    token.resize(token.size() - end_of_word_suffix.size());
    token += ' ';  // the word ends here
  }
  static const absl::flat_hash_map<std::string, char>* byte_of = [] {
    auto* map = new absl::flat_hash_map<std::string, char>;
    for (int b = 0; b < 256; ++b) (*map)[ByteToUnicode()[b]] = static_cast<char>(b);
    return map;
  }();
  std::string bytes;
  for (size_t i = 0; i < token.size();) {
    const unsigned char lead = static_cast<unsigned char>(token[i]);
    const size_t length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    auto it = byte_of->find(token.substr(i, length));
    if (it == byte_of->end()) return token;  // not a byte-level entry
    bytes += it->second;
    i += length;
  }
  return IsValidUtf8(bytes) ? bytes : token;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> Tokenizer::TextTokens(std::string_view text,
                                                               int max_length,
                                                               const StopCheck& stop) const {
  // EncodeForModel's ids without the special tokens and padding.
  if (max_length < num_special_tokens()) return EncodeForModel(text, max_length, 0).status();
  if (!IsValidUtf8(text)) return absl::InvalidArgumentError("the text is not valid UTF-8");
  absl::StatusOr<std::vector<int64_t>> content = impl_->EncodeText(text, stop);
  if (!content.ok()) return content.status();
  content->resize(
      std::min<size_t>(content->size(), static_cast<size_t>(max_length - num_special_tokens())));
  // One pass over the vocabulary for the ids wanted (it maps text to id).
  absl::flat_hash_map<int64_t, std::string> text_of;
  for (int64_t id : *content) text_of[id];
  for (const auto& [token, id] : impl_->vocab) {
    if (auto it = text_of.find(id); it != text_of.end()) it->second = token;
  }
  std::vector<std::string> tokens;
  tokens.reserve(content->size());
  for (int64_t id : *content)
    tokens.push_back(ReadableToken(text_of[id], impl_->end_of_word_suffix));
  return tokens;
}

std::optional<int64_t> Tokenizer::TokenToId(std::string_view token) const {
  auto it = impl_->vocab.find(std::string(token));
  if (it == impl_->vocab.end()) return std::nullopt;
  return it->second;
}

int64_t Tokenizer::vocabulary_size() const {
  int64_t largest = -1;
  for (const auto& [token, id] : impl_->vocab) largest = std::max(largest, id);
  return largest + 1;
}

int Tokenizer::num_leading_special_tokens() const {
  return static_cast<int>(impl_->post.before.size());
}

int Tokenizer::num_special_tokens() const {
  return static_cast<int>(impl_->post.before.size() + impl_->post.after.size());
}

}  // namespace memaudit
