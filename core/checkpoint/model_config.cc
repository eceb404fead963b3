#include "core/checkpoint/model_config.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/base/status_macros.h"
#include "core/model/schedule.h"
#include "core/verdict/verdict.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace memaudit {
namespace {

// Per-sample and per-condition element limits. They bound what the load
// probe and a batch allocate before any request is seen: 2^24 elements
// (64 MiB in float32 per sample) is 250× a Stable Diffusion XL latent and 5×
// a 1024² RGB image; an embedding of 2^22 elements is 27× SDXL's 77×2048.
constexpr int64_t kMaxSampleNumel = int64_t{1} << 24;
constexpr int64_t kMaxEmbeddingNumel = int64_t{1} << 22;
constexpr int64_t kMaxClasses = int64_t{1} << 20;
// Tokens per prompt: CLIP's 77 by default; 4,096 bounds the tokenizer's
// output per prompt far above any text encoder in use.
constexpr int64_t kDefaultTextLength = 77;
constexpr int64_t kMaxTextLength = 4096;

// The product of `dims` if every one is positive and it stays at most
// `limit` (checked before each multiplication, so it cannot overflow);
// else an error naming `field`.
absl::Status CheckShape(const std::string& source, const char* field,
                        const google::protobuf::RepeatedField<int64_t>& dims, int64_t limit) {
  int64_t numel = 1;
  for (int64_t dim : dims) {
    if (dim <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": ", field,
                                                     ": dimensions must be positive, got [",
                                                     absl::StrJoin(dims, ", "), "]"));
    }
    if (dim > limit / numel) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": ", field, ": [",
                                                     absl::StrJoin(dims, ", "), "] has more than ",
                                                     limit, " elements"));
    }
    numel *= dim;
  }
  return absl::OkStatus();
}

// Collects protobuf's text-format errors with their positions.
class ErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (first_.empty())
      first_ = absl::StrCat("line ", line + 1, ", column ", column + 1, ": ", message);
  }
  void AddWarning(int, int, const std::string&) override {}
  const std::string& first() const { return first_; }

 private:
  std::string first_;
};

absl::Status Invalid(const std::string& source, const std::string& field,
                     const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", field, ": ", problem));
}

// The text encoder's settings against the embedding it must produce.
absl::Status ValidateTextEncoder(const v1::Conditioning& cond, const std::string& source) {
  if (!cond.has_text_encoder()) return absl::OkStatus();
  const v1::TextEncoderConfig& text = cond.text_encoder();
  if (text.max_length() < 0 || text.max_length() > kMaxTextLength) {
    return Invalid(
        source, "conditioning.text_encoder.max_length",
        absl::StrCat("must be in [0, ", kMaxTextLength, "] (0: 77), got ", text.max_length()));
  }
  const int64_t max_length = text.max_length() > 0 ? text.max_length() : kDefaultTextLength;
  if (cond.embedding_shape_size() != 2 || cond.embedding_shape(0) != max_length) {
    return Invalid(source, "conditioning.embedding_shape",
                   absl::StrCat("a text encoder's embedding is [max_length, width] = [", max_length,
                                ", D]; got [", absl::StrJoin(cond.embedding_shape(), ", "), "]"));
  }
  if (text.has_pad_token_id() && text.pad_token_id() < 0) {
    return Invalid(source, "conditioning.text_encoder.pad_token_id",
                   absl::StrCat("must be >= 0, got ", text.pad_token_id()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::ModelConfig> ParseModelConfig(const std::string& text,
                                                 const std::string& source) {
  v1::ModelConfig config;
  ErrorCollector errors;
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &config)) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": not a valid text-format ModelConfig: ", errors.first()));
  }
  return config;
}

absl::Status ValidateModelConfig(const v1::ModelConfig& config, const std::string& source) {
  if (config.name().empty()) return Invalid(source, "name", "must not be empty");
  if (config.sample_shape_size() == 0) {
    return Invalid(source, "sample_shape", "must list at least one dimension, e.g. [2]");
  }
  RETURN_IF_ERROR(CheckShape(source, "sample_shape", config.sample_shape(), kMaxSampleNumel));
  if (config.prediction_type() == v1::PREDICTION_TYPE_UNSPECIFIED) {
    return Invalid(source, "prediction_type",
                   "must be one of EPSILON, V_PREDICTION, SAMPLE, SCORE");
  }
  if (!config.has_noise_schedule()) {
    return Invalid(source, "noise_schedule", "is required");
  }
  if (absl::StatusOr<NoiseSchedule> schedule = NoiseSchedule::Create(config.noise_schedule());
      !schedule.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", schedule.status().message()));
  }
  const v1::Conditioning& cond = config.conditioning();
  switch (cond.kind()) {
    case v1::Conditioning::NONE:
      break;
    case v1::Conditioning::CLASS_LABEL:
      if (cond.num_classes() <= 0 || cond.num_classes() > kMaxClasses) {
        return Invalid(source, "conditioning.num_classes",
                       absl::StrCat("must be in [1, ", kMaxClasses,
                                    "] for CLASS_LABEL conditioning, got ", cond.num_classes()));
      }
      break;
    case v1::Conditioning::EMBEDDING:
      if (cond.embedding_shape_size() == 0) {
        return Invalid(source, "conditioning.embedding_shape",
                       "is required for EMBEDDING conditioning");
      }
      RETURN_IF_ERROR(CheckShape(source, "conditioning.embedding_shape", cond.embedding_shape(),
                                 kMaxEmbeddingNumel));
      RETURN_IF_ERROR(ValidateTextEncoder(cond, source));
      break;
    default:
      return Invalid(source, "conditioning.kind",
                     "must be NONE, CLASS_LABEL or EMBEDDING (write `conditioning { kind: NONE }` "
                     "for unconditional models)");
  }
  if (cond.has_text_encoder() && cond.kind() != v1::Conditioning::EMBEDDING) {
    return Invalid(source, "conditioning.text_encoder",
                   "needs EMBEDDING conditioning (the text encoder's output is the embedding)");
  }
  if (config.has_latent()) {
    const v1::LatentConfig& latent = config.latent();
    if (!std::isfinite(latent.scaling_factor()) || latent.scaling_factor() <= 0) {
      return Invalid(source, "latent.scaling_factor",
                     absl::StrCat("must be finite and > 0 (0.18215 for Stable Diffusion's VAE), "
                                  "got ",
                                  latent.scaling_factor()));
    }
    if (latent.image_shape_size() == 0) {
      return Invalid(source, "latent.image_shape",
                     "is required: the decoder's per-sample output shape, e.g. [3, 512, 512]");
    }
    RETURN_IF_ERROR(
        CheckShape(source, "latent.image_shape", latent.image_shape(), kMaxSampleNumel));
  }
  if (!config.dtype().empty() && config.dtype() != "float32" && config.dtype() != "float64" &&
      config.dtype() != "bfloat16" && config.dtype() != "float16") {
    return Invalid(source, "dtype",
                   absl::StrCat("must be float32, float64, bfloat16 or float16 (or absent: as "
                                "saved), got \"",
                                config.dtype(), "\""));
  }
  if (absl::Status policy = ValidatePolicy(config.verdict_policy()); !policy.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", policy.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::ModelConfig> LoadModelConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open file"));
  std::stringstream text;
  text << in.rdbuf();
  ASSIGN_OR_RETURN(v1::ModelConfig config, ParseModelConfig(text.str(), path));
  RETURN_IF_ERROR(ValidateModelConfig(config, path));
  return config;
}

int64_t SampleNumel(const v1::ModelConfig& config) {
  int64_t numel = 1;
  for (int64_t dim : config.sample_shape()) numel *= dim;
  return numel;
}

}  // namespace memaudit
