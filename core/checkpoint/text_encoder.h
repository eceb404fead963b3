// A text-to-image model's prompt encoder (docs/TEXT_TO_IMAGE.md §2): the
// model directory's tokenizer and text_encoder.pt, turning prompts into the
// embeddings the denoiser takes as its condition c.
//
// Thread-safety: immutable after Load; Tokenize and Encode may be called
// from several threads at once.
#ifndef MEMAUDIT_CORE_CHECKPOINT_TEXT_ENCODER_H_
#define MEMAUDIT_CORE_CHECKPOINT_TEXT_ENCODER_H_

#include <ATen/Tensor.h>
#include <torch/csrc/jit/api/module.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/text/tokenizer.h"
#include "memaudit/v1/model_config.pb.h"

namespace memaudit {

class TextEncoder {
 public:
  // File names inside a model directory. The tokenizer is tokenizer.json,
  // or, when there is none, CLIP's vocab.json + merges.txt (what Stable
  // Diffusion's diffusers folders ship).
  static constexpr const char* kModelFile = "text_encoder.pt";
  static constexpr const char* kVocabFile = "vocab.json";
  static constexpr const char* kMergesFile = "merges.txt";
  // The longest prompt accepted, in bytes of UTF-8.
  static constexpr size_t kMaxPromptBytes = 64 * 1024;
  // Prompts per network call in Encode.
  static constexpr int64_t kEncodeBatch = 16;

  // Loads the tokenizer and text_encoder.pt from `directory` for `config`
  // (already validated; conditioning.text_encoder set), onto `device`,
  // converting the module to `dtype` when given. Embeddings are returned in
  // `output_dtype`. Probes the module with the empty prompt. NOT_FOUND
  // naming the file when one is missing; INVALID_ARGUMENT naming the file
  // and the problem for a bad tokenizer, a max_length that cannot hold the
  // tokenizer's special tokens, no pad id (none configured and no
  // <|endoftext|> token), a forward that does not take one argument or fails
  // on the empty prompt's ids (e.g. a pad id outside its vocabulary), or an
  // output that is not a finite floating tensor of [1, *embedding_shape].
  static absl::StatusOr<std::unique_ptr<const TextEncoder>> Load(
      const std::string& directory, const v1::ModelConfig& config, at::Device device,
      std::optional<at::ScalarType> dtype, at::ScalarType output_dtype);

  ~TextEncoder();

  // Ids [prompts.size(), max_length()], int64 on the CPU, as the model's
  // tokenizer pads and truncates them. INVALID_ARGUMENT naming the prompt's
  // index for text that is not UTF-8 or longer than kMaxPromptBytes; the
  // tokenizer's other errors (Tokenizer::Encode: its regex budget, `stop`).
  absl::StatusOr<at::Tensor> Tokenize(absl::Span<const std::string> prompts,
                                      const StopCheck& stop = nullptr) const;

  // The prompt's own tokens as readable text (Tokenizer::TextTokens): they
  // sit at positions [first_text_position(), first_text_position() + size)
  // of Tokenize's ids, so also of the embedding's first axis for encoders
  // whose output is one vector per id (CLIP's). Errors as Tokenize's for
  // one prompt.
  absl::StatusOr<std::vector<std::string>> TextTokens(const std::string& prompt,
                                                      const StopCheck& stop = nullptr) const;
  int first_text_position() const { return tokenizer_->num_leading_special_tokens(); }

  // Token attribution's input (core/early/token_attribution.h): the
  // prompt's embedding [1, *embedding_shape] computed with autograd
  // recording from the encoder's token-embedding table, the table, and the
  // ids and text of the prompt's own tokens (TextTokens' order; a token
  // that occurs twice has one row, so one score). The table is the
  // one floating parameter of shape [vocabulary size, D] (CLIP's
  // token_embedding.weight); FAILED_PRECONDITION when the module has none
  // or several (has_token_table()). Errors as TextTokens'.
  struct DifferentiableEncoding {
    at::Tensor embedding;
    at::Tensor table;
    std::vector<int64_t> text_ids;
    std::vector<std::string> text_tokens;
  };
  absl::StatusOr<DifferentiableEncoding> EncodeDifferentiably(
      const std::string& prompt, const StopCheck& stop = nullptr) const;
  bool has_token_table() const { return token_table_.defined(); }

  // Token attribution's deletions (core/early/token_attribution.h): the
  // prompt's embedding with each of its own tokens deleted in turn,
  // [T, *embedding_shape] for TextTokens' T tokens, in output_dtype on the
  // device, without gradients. Row i encodes the prompt's ids with the i-th
  // text token removed, the later ids moved one position left and pad_id()
  // appended: what tokenizing the prompt without that token gives when the
  // neighbours tokenize the same, except that for a prompt cut at
  // max_length no token from beyond the cut moves in (the deletion changes
  // only what the model saw). Errors as Encode's.
  absl::StatusOr<at::Tensor> EncodeWithEachTokenDeleted(const std::string& prompt,
                                                        const StopCheck& stop = nullptr) const;

  // Embeddings [prompts.size(), *embedding_shape] in output_dtype on the
  // device, computed kEncodeBatch prompts per network call, without
  // gradients. Errors of Tokenize; INTERNAL when the network throws;
  // FAILED_PRECONDITION when it returns the wrong shape or non-finite
  // values (the model's fault; naming text_encoder.pt and, for non-finite
  // values, the prompt's index); `stop`'s status, asked while tokenizing and between
  // network calls.
  absl::StatusOr<at::Tensor> Encode(absl::Span<const std::string> prompts,
                                    const StopCheck& stop = nullptr) const;

  // The embedding of "" [1, *embedding_shape] in output_dtype on the
  // device, computed by the load probe.
  const at::Tensor& empty_prompt_embedding() const { return empty_prompt_embedding_; }
  int max_length() const { return max_length_; }
  int64_t pad_id() const { return pad_id_; }
  // tokenizer.json, or "vocab.json + merges.txt".
  const std::string& tokenizer_source() const { return tokenizer_source_; }

 private:
  TextEncoder() = default;
  // Embeddings of ids [B, max_length]; messages number the rows from
  // `first_index`.
  absl::StatusOr<at::Tensor> EncodeIds(const at::Tensor& ids, int64_t first_index) const;

  std::unique_ptr<Tokenizer> tokenizer_;
  std::string tokenizer_source_;
  std::string model_path_;
  int max_length_ = Tokenizer::kClipMaxLength;
  int64_t pad_id_ = 0;
  std::vector<int64_t> embedding_shape_;
  at::Tensor empty_prompt_embedding_;
  // The module's token-embedding parameter (requires grad), if recognised.
  at::Tensor token_table_;
  at::Device device_ = at::kCPU;
  at::ScalarType output_dtype_ = at::kFloat;
  mutable torch::jit::Module module_;
};

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_CHECKPOINT_TEXT_ENCODER_H_
