#include "tools/toy/model_directory.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/checkpoint/load_model.h"
#include "core/checkpoint/model_config.h"
#include "core/runtime/torch_runtime.h"
#include "google/protobuf/text_format.h"

namespace memaudit::toy {

absl::Status WriteModelDirectory(const std::string& repository, const v1::ModelConfig& config,
                                 const torch::jit::Module& module, const ReferenceSet* reference) {
  namespace fs = std::filesystem;
  const fs::path directory = fs::path(repository) / config.name();
  RETURN_IF_ERROR(ValidateModelConfig(config, (directory / kModelConfigFile).string()));
  std::error_code ec;
  fs::create_directories(directory, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat(directory.string(), ": cannot create: ", ec.message()));
  }
  std::string text;
  google::protobuf::TextFormat::PrintToString(config, &text);
  {
    std::ofstream out(directory / kModelConfigFile);
    out << text;
    if (!out) return absl::InternalError(absl::StrCat(directory.string(), ": write failed"));
  }
  try {
    module.save((directory / kModelNetworkFile).string());
  } catch (const std::exception& e) {
    return TorchError(absl::StatusCode::kInternal, "saving model.pt failed", e);
  }
  if (reference != nullptr) {
    return reference->Save((directory / ReferenceSet::kFileName).string());
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::NoiseSchedule::Kind> ParseScheduleKind(const std::string& name) {
  v1::NoiseSchedule::Kind kind;
  if (!v1::NoiseSchedule::Kind_Parse(absl::AsciiStrToUpper(name), &kind) ||
      kind == v1::NoiseSchedule::KIND_UNSPECIFIED) {
    return absl::InvalidArgumentError(
        absl::StrCat("schedule \"", name, "\" is not linear, scaled_linear or cosine"));
  }
  return kind;
}

absl::StatusOr<v1::PredictionType> ParsePredictionType(const std::string& name) {
  v1::PredictionType type;
  if (!v1::PredictionType_Parse(absl::AsciiStrToUpper(name), &type) ||
      type == v1::PREDICTION_TYPE_UNSPECIFIED) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prediction type \"", name, "\" is not epsilon, v_prediction, sample or score"));
  }
  return type;
}

v1::NoiseSchedule DefaultSchedule(v1::NoiseSchedule::Kind kind, int64_t num_train_timesteps) {
  v1::NoiseSchedule schedule;
  schedule.set_kind(kind);
  schedule.set_num_train_timesteps(num_train_timesteps);
  if (kind == v1::NoiseSchedule::SCALED_LINEAR) {
    schedule.set_beta_start(0.00085);
    schedule.set_beta_end(0.012);
  } else if (kind == v1::NoiseSchedule::LINEAR) {
    schedule.set_beta_start(0.0001);
    schedule.set_beta_end(0.02);
  }
  return schedule;
}

}  // namespace memaudit::toy
