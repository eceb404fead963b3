// A byte-level BPE text tokenizer that reads a Hugging Face `tokenizer.json`
// (the format of the `tokenizers` library) and produces the ids that the
// reference implementation, @huggingface/tokenizers (Tokenizers.js), produces
// for the same file and text: GPT-2/RoBERTa-style files and CLIP's variant
// (NFC + whitespace collapsing + lower-casing, CLIP's split regex, the
// `</w>` end-of-word suffix, BOS/EOS). tests/tokenizer_test.cc checks it
// token for token against that reference on a generated corpus.
//
// Supported, and nothing else (anything else is refused at Load with
// INVALID_ARGUMENT naming the JSON path, e.g.
// `normalizer.type "BertNormalizer" is not supported`):
//   normalizer     null, Sequence, NFC, NFD, NFKC, NFKD, Lowercase, Strip,
//                  Prepend, Replace (pattern String or Regex, content without $)
//   pre_tokenizer  null, Sequence, ByteLevel (add_prefix_space, use_regex),
//                  Split (behavior Removed with a Regex: with invert, or
//                  without capturing groups; Isolated without invert, with a
//                  String or a Regex)
//   model          BPE: vocab, merges ("a b" or ["a", "b"]), unk_token,
//                  end_of_word_suffix, ignore_merges; continuing_subword_prefix
//                  empty or null, dropout null, no byte_fallback, no fuse_unk
//   added_tokens   matched in the raw text (normalized: false) or in the
//                  normalized text (normalized: true), lstrip/rstrip
//   post_processor null, TemplateProcessing (single template), RobertaProcessing,
//                  BertProcessing, ByteLevel (ids unchanged), Sequence
//   truncation, padding, decoder: ignored (truncation and padding are the
//                  caller's, through EncodeForModel).
// Regex patterns are the Rust library's (Oniguruma) syntax; they run on ICU
// with \s, \S, \d, \D, \w, \W given Oniguruma's Unicode meaning, and inline
// (?i:...) groups folding ASCII letters only, as the reference does.
//
// Thread-safety: a loaded Tokenizer is immutable; all const methods may be
// called concurrently.
#ifndef MEMAUDIT_CORE_TEXT_TOKENIZER_H_
#define MEMAUDIT_CORE_TEXT_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "core/base/stop.h"

namespace memaudit {

class Tokenizer {
 public:
  // Conventional file name inside a model directory.
  static constexpr const char* kFileName = "tokenizer.json";
  // CLIP's text encoder context length (tokenizer_config.json's
  // model_max_length for every Stable Diffusion CLIP tokenizer).
  static constexpr int kClipMaxLength = 77;

  // Reads and validates the file. NOT_FOUND when it cannot be read;
  // INVALID_ARGUMENT, naming the file and the JSON path, when it is not JSON
  // or uses a feature listed above as unsupported.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& tokenizer_json_path);
  // The same from the file's text; `source_name` prefixes error messages.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view json_text,
                                                             std::string_view source_name);

  // CLIP's tokenizer from the files Stable Diffusion's diffusers folders
  // ship (tokenizer/vocab.json, tokenizer/merges.txt), built exactly as
  // transformers' CLIPConverter builds the fast tokenizer from them: NFC,
  // whitespace runs to one space, lower case; CLIP's split regex and byte
  // level; BPE with "</w>", unk <|endoftext|>; <|startoftext|> ...
  // <|endoftext|> around the text. merges.txt's "#version" line is skipped
  // and, as CLIPTokenizer does, at most 49152 - 256 - 2 merges are read.
  // NOT_FOUND when a file cannot be read; INVALID_ARGUMENT naming the file
  // (and line) when vocab.json is not an object of token -> id, a merge line
  // is not two tokens, or the vocabulary lacks <|startoftext|> or
  // <|endoftext|>.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadClipVocabAndMerges(
      const std::string& vocab_json_path, const std::string& merges_txt_path);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // The ids of `text` (UTF-8) with the post-processor's special tokens
  // (e.g. CLIP's <|startoftext|> ... <|endoftext|>), no truncation or
  // padding. INVALID_ARGUMENT when `text` is not valid UTF-8;
  // RESOURCE_EXHAUSTED naming the pattern when the file's regexes need more
  // than 10^8 match steps for this text (catastrophic backtracking: real
  // tokenizers need none of that budget) or when its Replace normalizers
  // grow the text past 32 times its length + 4,096 characters (real ones
  // keep it about the same); `stop`'s status when it says so
  // (it is asked every 10,000 match steps, about every 0.1 ms); INTERNAL if
  // ICU fails.
  absl::StatusOr<std::vector<int64_t>> Encode(std::string_view text,
                                              const StopCheck& stop = nullptr) const;

  // What a text encoder takes: exactly `max_length` ids, as Hugging Face's
  // `tokenizer(text, padding="max_length", truncation=True,
  // max_length=max_length)` gives them. The text's own tokens are cut to
  // max_length minus the special tokens the post-processor adds, the special
  // tokens are added (so a long prompt still ends in EOS), and the result is
  // padded on the right with `pad_id` (<|endoftext|> for Stable Diffusion
  // 1.x's CLIP tokenizer, "!" = 0 for OpenCLIP's). INVALID_ARGUMENT when
  // max_length cannot hold the special tokens or text is not UTF-8; the
  // other errors of Encode.
  absl::StatusOr<std::vector<int64_t>> EncodeForModel(std::string_view text, int max_length,
                                                      int64_t pad_id,
                                                      const StopCheck& stop = nullptr) const;

  // The text's own tokens (no special tokens, no padding) as EncodeForModel
  // keeps them for `max_length`, each as the piece of normalized text it
  // stands for, so that the pieces concatenated read as the text: the
  // vocabulary entry with an end-of-word suffix as a trailing space (CLIP's
  // "seven</w>" is "seven ", "s" "ev" "en</w>" are "s" "ev" "en ") and, when
  // each of its characters stands for a byte (byte-level vocabularies, where
  // GPT-2's "Ġseven" is " seven"), those bytes — kept as spelled in the
  // vocabulary when the bytes are not UTF-8 on their own (half of a
  // multi-byte character). They sit at positions
  // [num_leading_special_tokens(), num_leading_special_tokens() + size) of
  // EncodeForModel's ids. The errors of EncodeForModel.
  absl::StatusOr<std::vector<std::string>> TextTokens(std::string_view text, int max_length,
                                                      const StopCheck& stop = nullptr) const;

  // The id of a vocabulary or added token, if there is one.
  std::optional<int64_t> TokenToId(std::string_view token) const;
  // One more than the largest id (vocabulary and added tokens).
  int64_t vocabulary_size() const;
  // How many ids the post-processor adds to a single sequence.
  int num_special_tokens() const;
  // How many of them come before the text's own ids (CLIP: 1, BOS).
  int num_leading_special_tokens() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_TEXT_TOKENIZER_H_
