// Reading and validating a model's config.pbtxt (docs/DESIGN.md §4).
#ifndef MEMAUDIT_CORE_CHECKPOINT_MODEL_CONFIG_H_
#define MEMAUDIT_CORE_CHECKPOINT_MODEL_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "memaudit/v1/model_config.pb.h"

namespace memaudit {

// Parses text-format ModelConfig from `text`. `source` (usually the file path)
// prefixes every error message, together with the line and column of a syntax
// error. Does not validate semantics; see ValidateModelConfig.
absl::StatusOr<v1::ModelConfig> ParseModelConfig(const std::string& text,
                                                 const std::string& source);

// Checks the semantic contract: non-empty name, positive sample_shape,
// prediction_type and conditioning set, a valid schedule, num_classes > 0 for
// CLASS_LABEL, embedding_shape for EMBEDDING, a known dtype name. Errors are INVALID_ARGUMENT and
// read "<source>: <field>: <problem>".
absl::Status ValidateModelConfig(const v1::ModelConfig& config, const std::string& source);

// Reads, parses and validates `path`. NOT_FOUND if the file is missing.
absl::StatusOr<v1::ModelConfig> LoadModelConfig(const std::string& path);

// Number of elements of one sample: the product of sample_shape.
int64_t SampleNumel(const v1::ModelConfig& config);

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_CHECKPOINT_MODEL_CONFIG_H_
