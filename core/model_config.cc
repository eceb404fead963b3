#include "model_config.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "schedule.h"
#include "status_macros.h"
#include "verdict.h"

namespace memaudit {
namespace {

constexpr int64_t kMaxSampleNumel = int64_t{1} << 28;

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
  int64_t numel = 1;
  for (int64_t dim : config.sample_shape()) {
    if (dim <= 0) {
      return Invalid(source, "sample_shape",
                     absl::StrCat("dimensions must be positive, got [",
                                  absl::StrJoin(config.sample_shape(), ", "), "]"));
    }
    numel *= dim;
    if (numel > kMaxSampleNumel) {
      return Invalid(source, "sample_shape", "more than 2^28 elements per sample");
    }
  }
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
      if (cond.num_classes() <= 0) {
        return Invalid(source, "conditioning.num_classes",
                       "must be positive for CLASS_LABEL conditioning");
      }
      break;
    case v1::Conditioning::EMBEDDING:
      if (cond.embedding_shape_size() == 0) {
        return Invalid(source, "conditioning.embedding_shape",
                       "is required for EMBEDDING conditioning");
      }
      for (int64_t dim : cond.embedding_shape()) {
        if (dim <= 0) {
          return Invalid(source, "conditioning.embedding_shape", "dimensions must be positive");
        }
      }
      break;
    default:
      return Invalid(source, "conditioning.kind",
                     "must be NONE, CLASS_LABEL or EMBEDDING (write `conditioning { kind: NONE }` "
                     "for unconditional models)");
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
