#include "core/checkpoint/text_encoder.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/checkpoint/script_module.h"
#include "core/runtime/torch_runtime.h"

namespace memaudit {
namespace {

namespace fs = std::filesystem;

constexpr const char* kEncoderSignature =
    "forward(ids: Tensor) -> Tensor, ids int64 [B, max_length]";

// tokenizer.json when the directory has one, else vocab.json + merges.txt.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadDirectoryTokenizer(const std::string& directory,
                                                                  std::string* source) {
  std::error_code ec;
  const fs::path dir(directory);
  const fs::path json = dir / Tokenizer::kFileName;
  if (fs::exists(json, ec)) {
    *source = Tokenizer::kFileName;
    return Tokenizer::Load(json.string());
  }
  const fs::path vocab = dir / TextEncoder::kVocabFile;
  const fs::path merges = dir / TextEncoder::kMergesFile;
  if (fs::exists(vocab, ec) || fs::exists(merges, ec)) {
    *source = absl::StrCat(TextEncoder::kVocabFile, " + ", TextEncoder::kMergesFile);
    return Tokenizer::LoadClipVocabAndMerges(vocab.string(), merges.string());
  }
  return absl::NotFoundError(absl::StrCat(
      directory, ": conditioning.text_encoder needs a tokenizer: ", Tokenizer::kFileName, ", or ",
      TextEncoder::kVocabFile, " and ", TextEncoder::kMergesFile));
}

}  // namespace

TextEncoder::~TextEncoder() = default;

absl::StatusOr<std::unique_ptr<const TextEncoder>> TextEncoder::Load(
    const std::string& directory, const v1::ModelConfig& config, at::Device device,
    std::optional<at::ScalarType> dtype, at::ScalarType output_dtype) {
  const v1::TextEncoderConfig& text = config.conditioning().text_encoder();
  std::unique_ptr<TextEncoder> encoder(new TextEncoder());
  encoder->device_ = device;
  encoder->output_dtype_ = output_dtype;
  encoder->max_length_ =
      text.max_length() > 0 ? static_cast<int>(text.max_length()) : Tokenizer::kClipMaxLength;
  encoder->embedding_shape_.assign(config.conditioning().embedding_shape().begin(),
                                   config.conditioning().embedding_shape().end());
  ASSIGN_OR_RETURN(encoder->tokenizer_,
                   LoadDirectoryTokenizer(directory, &encoder->tokenizer_source_));
  const std::string tokenizer_path = (fs::path(directory) / encoder->tokenizer_source_).string();
  if (encoder->max_length_ < encoder->tokenizer_->num_special_tokens() + 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        tokenizer_path, ": conditioning.text_encoder.max_length ", encoder->max_length_,
        " cannot hold the tokenizer's ", encoder->tokenizer_->num_special_tokens(),
        " special tokens and one text token"));
  }
  if (text.has_pad_token_id()) {
    encoder->pad_id_ = text.pad_token_id();
  } else if (std::optional<int64_t> eos = encoder->tokenizer_->TokenToId("<|endoftext|>")) {
    encoder->pad_id_ = *eos;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        tokenizer_path,
        ": has no <|endoftext|> token to pad with; set conditioning.text_encoder.pad_token_id"));
  }

  encoder->model_path_ = (fs::path(directory) / kModelFile).string();
  ASSIGN_OR_RETURN(ScriptModule loaded, LoadScriptModule(encoder->model_path_, device, dtype));
  encoder->module_ = std::move(loaded.module);
  RETURN_IF_ERROR(
      CheckForwardArgumentCount(encoder->module_, encoder->model_path_, 1, kEncoderSignature));
  // The probe: the empty prompt, whose embedding is kept (the null
  // condition when the directory has no null_condition.pt).
  ASSIGN_OR_RETURN(const at::Tensor ids, encoder->Tokenize({std::string()}));
  absl::StatusOr<at::Tensor> probe = encoder->EncodeIds(ids, 0);
  if (!probe.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(encoder->model_path_, ": probe with the empty prompt's ids ",
                     ShapeString(ids.sizes()), " failed: ", probe.status().message()));
  }
  encoder->empty_prompt_embedding_ = *std::move(probe);
  // The token-embedding table, for token attribution: the one floating
  // parameter [vocabulary size, D]. Made to require grad here, before the
  // encoder is shared; Encode runs without gradients whatever it says.
  const int64_t vocabulary = encoder->tokenizer_->vocabulary_size();
  int tables = 0;
  for (const torch::jit::Named<at::Tensor>& parameter : encoder->module_.named_parameters()) {
    const at::Tensor& value = parameter.value;
    if (value.dim() == 2 && value.size(0) == vocabulary &&
        at::isFloatingType(value.scalar_type())) {
      encoder->token_table_ = value;
      ++tables;
    }
  }
  if (tables != 1) {
    encoder->token_table_ = at::Tensor();
  } else if (!encoder->token_table_.requires_grad()) {
    encoder->token_table_.requires_grad_(true);
  }
  return std::unique_ptr<const TextEncoder>(std::move(encoder));
}

absl::StatusOr<at::Tensor> TextEncoder::Tokenize(absl::Span<const std::string> prompts,
                                                 const StopCheck& stop) const {
  at::Tensor ids = at::empty({static_cast<int64_t>(prompts.size()), max_length_}, at::kLong);
  auto rows = ids.accessor<int64_t, 2>();
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].size() > kMaxPromptBytes) {
      return absl::InvalidArgumentError(absl::StrCat("prompt ", i, ": ", prompts[i].size(),
                                                     " bytes, more than the limit of ",
                                                     kMaxPromptBytes));
    }
    absl::StatusOr<std::vector<int64_t>> encoded =
        tokenizer_->EncodeForModel(prompts[i], max_length_, pad_id_, stop);
    if (!encoded.ok()) {
      return absl::Status(encoded.status().code(),
                          absl::StrCat("prompt ", i, ": ", encoded.status().message()));
    }
    for (int j = 0; j < max_length_; ++j) rows[i][j] = (*encoded)[j];
  }
  return ids;
}

absl::StatusOr<std::vector<std::string>> TextEncoder::TextTokens(const std::string& prompt,
                                                                 const StopCheck& stop) const {
  RETURN_IF_ERROR(Tokenize({prompt}, stop).status());  // its checks and messages
  return tokenizer_->TextTokens(prompt, max_length_, stop);
}

absl::StatusOr<TextEncoder::DifferentiableEncoding> TextEncoder::EncodeDifferentiably(
    const std::string& prompt, const StopCheck& stop) const {
  if (!token_table_.defined()) {
    return absl::FailedPreconditionError(
        absl::StrCat(model_path_, ": no token-embedding table (one floating parameter of shape [",
                     tokenizer_->vocabulary_size(), ", D]) to attribute tokens by"));
  }
  ASSIGN_OR_RETURN(const at::Tensor ids, Tokenize({prompt}, stop));
  DifferentiableEncoding encoding;
  ASSIGN_OR_RETURN(encoding.text_tokens, tokenizer_->TextTokens(prompt, max_length_, stop));
  encoding.table = token_table_;
  const int64_t first = first_text_position();
  for (size_t i = 0; i < encoding.text_tokens.size(); ++i) {
    encoding.text_ids.push_back(ids[0][first + static_cast<int64_t>(i)].item<int64_t>());
  }
  try {
    c10::AutoGradMode grad(true);
    c10::IValue out = module_.forward({ids.to(device_)});
    if (!out.isTensor())
      return absl::FailedPreconditionError(model_path_ + ": forward returned no tensor");
    encoding.embedding = out.toTensor().to(output_dtype_);
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInternal, "the text encoder failed", e);
  }
  return encoding;
}

absl::StatusOr<at::Tensor> TextEncoder::EncodeWithEachTokenDeleted(const std::string& prompt,
                                                                   const StopCheck& stop) const {
  ASSIGN_OR_RETURN(const at::Tensor ids, Tokenize({prompt}, stop));
  ASSIGN_OR_RETURN(const std::vector<std::string> tokens,
                   tokenizer_->TextTokens(prompt, max_length_, stop));
  const int64_t count = static_cast<int64_t>(tokens.size());
  const int64_t first = first_text_position();
  // Row i: ids[:first + i] ++ ids[first + i + 1:] ++ [pad].
  const at::Tensor row = ids[0];
  std::vector<at::Tensor> rows;
  for (int64_t i = 0; i < count; ++i) {
    rows.push_back(at::cat({row.slice(0, 0, first + i), row.slice(0, first + i + 1),
                            at::full({1}, pad_id_, at::kLong)}));
  }
  if (rows.empty()) return Encode({}, stop);  // [0, *embedding_shape]
  const at::Tensor deleted = at::stack(rows);
  std::vector<at::Tensor> parts;
  for (int64_t start = 0; start < count; start += kEncodeBatch) {
    RETURN_IF_ERROR(CheckStop(stop));
    absl::StatusOr<at::Tensor> part =
        EncodeIds(deleted.slice(0, start, std::min(count, start + kEncodeBatch)), start);
    if (!part.ok()) {
      // EncodeIds numbers the rows as prompts: here row i is token i deleted.
      return absl::Status(part.status().code(),
                          absl::StrCat(kModelFile,
                                       ", the prompt with each token deleted (prompt i: "
                                       "token i deleted): ",
                                       part.status().message()));
    }
    parts.push_back(*std::move(part));
  }
  return at::cat(parts, 0);
}

absl::StatusOr<at::Tensor> TextEncoder::EncodeIds(const at::Tensor& ids,
                                                  int64_t first_index) const {
  const int64_t rows = ids.size(0);
  std::vector<int64_t> expected{rows};
  expected.insert(expected.end(), embedding_shape_.begin(), embedding_shape_.end());
  ASSIGN_OR_RETURN(at::Tensor out,
                   ForwardWithShape(module_, ids.to(device_), expected, "the text encoder",
                                    "batch, conditioning.embedding_shape"));
  out = out.to(output_dtype_);
  const at::Tensor finite = at::isfinite(out).flatten(1).all(1).cpu();
  for (int64_t i = 0; i < rows; ++i) {
    if (!finite[i].item<bool>()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "prompt ", first_index + i, ": the text encoder returned non-finite values"));
    }
  }
  return out;
}

absl::StatusOr<at::Tensor> TextEncoder::Encode(absl::Span<const std::string> prompts,
                                               const StopCheck& stop) const {
  ASSIGN_OR_RETURN(const at::Tensor ids, Tokenize(prompts, stop));
  std::vector<at::Tensor> parts;
  for (int64_t start = 0; start < ids.size(0); start += kEncodeBatch) {
    const int64_t end = std::min<int64_t>(ids.size(0), start + kEncodeBatch);
    RETURN_IF_ERROR(CheckStop(stop));
    absl::StatusOr<at::Tensor> part = EncodeIds(ids.slice(0, start, end), start);
    if (!part.ok()) {
      // The module misbehaved: name its file (not the server's directory).
      return absl::Status(part.status().code(),
                          absl::StrCat(kModelFile, ": ", part.status().message()));
    }
    parts.push_back(*std::move(part));
  }
  if (parts.empty()) {
    std::vector<int64_t> shape{0};
    shape.insert(shape.end(), embedding_shape_.begin(), embedding_shape_.end());
    return at::empty(shape, at::TensorOptions().dtype(output_dtype_).device(device_));
  }
  return parts.size() == 1 ? parts[0] : at::cat(parts, 0);
}

}  // namespace memaudit
