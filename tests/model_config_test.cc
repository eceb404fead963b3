#include "core/checkpoint/model_config.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "tests/test_util.h"

namespace memaudit {
namespace {

constexpr const char* kDesignExample = R"pb(
  name: "toy2d"
  sample_shape: [ 2 ]
  prediction_type: EPSILON
  noise_schedule { kind: LINEAR beta_start: 0.0001 beta_end: 0.02 num_train_timesteps: 1000 }
  conditioning { kind: NONE }
)pb";

TEST(ModelConfigTest, ParsesTheDesignExample) {
  auto config = ParseModelConfig(kDesignExample, "config.pbtxt");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->name(), "toy2d");
  ASSERT_EQ(config->sample_shape_size(), 1);
  EXPECT_EQ(config->sample_shape(0), 2);
  EXPECT_EQ(config->prediction_type(), v1::EPSILON);
  EXPECT_EQ(config->noise_schedule().kind(), v1::NoiseSchedule::LINEAR);
  EXPECT_DOUBLE_EQ(config->noise_schedule().beta_end(), 0.02);
  EXPECT_EQ(config->noise_schedule().num_train_timesteps(), 1000);
  EXPECT_EQ(config->conditioning().kind(), v1::Conditioning::NONE);
  EXPECT_TRUE(ValidateModelConfig(*config, "config.pbtxt").ok());
  EXPECT_EQ(SampleNumel(*config), 2);
}

TEST(ModelConfigTest, SyntaxErrorsNameFileAndPosition) {
  auto config = ParseModelConfig("name: \"x\"\nsample_shap: [2]\n", "repo/x/config.pbtxt");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(config.status().message().find("repo/x/config.pbtxt"), std::string::npos);
  EXPECT_NE(config.status().message().find("line 2"), std::string::npos) << config.status();
  EXPECT_NE(config.status().message().find("sample_shap"), std::string::npos);
}

// Each broken field must be named in the error.
TEST(ModelConfigTest, ValidationNamesTheField) {
  struct Case {
    std::function<void(v1::ModelConfig&)> breakage;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](v1::ModelConfig& c) { c.clear_name(); }, "name"},
      {[](v1::ModelConfig& c) { c.clear_sample_shape(); }, "sample_shape"},
      {[](v1::ModelConfig& c) { c.set_sample_shape(0, -3); }, "sample_shape"},
      {[](v1::ModelConfig& c) { c.set_prediction_type(v1::PREDICTION_TYPE_UNSPECIFIED); },
       "prediction_type"},
      {[](v1::ModelConfig& c) { c.clear_noise_schedule(); }, "noise_schedule"},
      {[](v1::ModelConfig& c) { c.mutable_noise_schedule()->set_beta_start(-1); },
       "noise_schedule.beta_start"},
      {[](v1::ModelConfig& c) { c.mutable_noise_schedule()->set_num_train_timesteps(1); },
       "noise_schedule.num_train_timesteps"},
      {[](v1::ModelConfig& c) { c.clear_conditioning(); }, "conditioning.kind"},
      {[](v1::ModelConfig& c) {
         c.mutable_conditioning()->set_kind(v1::Conditioning::CLASS_LABEL);
       },
       "conditioning.num_classes"},
      {[](v1::ModelConfig& c) { c.mutable_conditioning()->set_kind(v1::Conditioning::EMBEDDING); },
       "conditioning.embedding_shape"},
      // Verdict policies are checked at load, not when an audit meets them.
      {[](v1::ModelConfig& c) { c.mutable_verdict_policy()->set_memorized_width(-1); },
       "verdict_policy.memorized_width"},
      {[](v1::ModelConfig& c) {
         c.mutable_verdict_policy()->set_memorized_width(0.1);
         c.mutable_verdict_policy()->set_partial_width(std::nan(""));
       },
       "verdict_policy.partial_width"},
      {[](v1::ModelConfig& c) { c.mutable_verdict_policy()->set_condition_memorized_fraction(7); },
       "verdict_policy.condition_memorized_fraction"},
      {[](v1::ModelConfig& c) { c.mutable_verdict_policy()->set_model_memorized_fraction(-0.5); },
       "verdict_policy.model_memorized_fraction"},
      {[](v1::ModelConfig& c) { c.mutable_verdict_policy()->set_partial_radius(0.2); },
       "verdict_policy.partial_radius"},
      {[](v1::ModelConfig& c) {
         c.mutable_verdict_policy()->set_spacing(std::numeric_limits<double>::infinity());
       },
       "verdict_policy.spacing"},
      {[](v1::ModelConfig& c) { c.mutable_verdict_policy()->set_max_positive_eigenvalues(-2); },
       "verdict_policy.max_positive_eigenvalues"},
  };
  for (const Case& c : cases) {
    v1::ModelConfig config = testing::MixtureConfig("toy", 2);
    ASSERT_TRUE(ValidateModelConfig(config, "m/config.pbtxt").ok());
    c.breakage(config);
    absl::Status status = ValidateModelConfig(config, "m/config.pbtxt");
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(status.message().find("m/config.pbtxt: " + c.field), std::string::npos)
        << "expected field " << c.field << " in: " << status;
  }
}

TEST(ModelConfigTest, LoadReportsMissingFile) {
  auto config = LoadModelConfig("/nonexistent/memaudit/config.pbtxt");
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(config.status().message().find("/nonexistent/memaudit/config.pbtxt"),
            std::string::npos);
}

TEST(ModelConfigTest, LoadParsesAndValidates) {
  testing::ScratchDir dir;
  testing::WriteFile(dir.Join("config.pbtxt"), kDesignExample);
  EXPECT_TRUE(LoadModelConfig(dir.Join("config.pbtxt")).ok());
  testing::WriteFile(dir.Join("bad.pbtxt"), "name: \"x\"\nsample_shape: [2]\n");
  auto bad = LoadModelConfig(dir.Join("bad.pbtxt"));
  EXPECT_NE(bad.status().message().find("prediction_type"), std::string::npos) << bad.status();
}

// Shapes whose allocation alone would take the process down are refused
// when the config is read, with no overflow on the way (the embedding
// below made the server abort at start: 80 GB in the load probe).
TEST(ModelConfigTest, ShapesThatCannotBeAllocatedAreRefused) {
  struct Case {
    std::function<void(v1::ModelConfig&)> set;
    std::string field;
  };
  const int64_t huge = int64_t{1} << 40;
  const std::vector<Case> cases = {
      {[](v1::ModelConfig& c) {
         c.clear_sample_shape();
         c.add_sample_shape(16384);
         c.add_sample_shape(16384);
       },
       "sample_shape"},
      {[&](v1::ModelConfig& c) {
         c.clear_sample_shape();
         for (int i = 0; i < 4; ++i) c.add_sample_shape(huge);  // 2^160 would wrap
       },
       "sample_shape"},
      {[](v1::ModelConfig& c) {
         c.mutable_conditioning()->set_kind(v1::Conditioning::EMBEDDING);
         c.mutable_conditioning()->add_embedding_shape(100000);
         c.mutable_conditioning()->add_embedding_shape(100000);
       },
       "conditioning.embedding_shape"},
      {[&](v1::ModelConfig& c) {
         c.mutable_conditioning()->set_kind(v1::Conditioning::EMBEDDING);
         for (int i = 0; i < 4; ++i) c.mutable_conditioning()->add_embedding_shape(huge);
       },
       "conditioning.embedding_shape"},
      {[&](v1::ModelConfig& c) {
         c.mutable_conditioning()->set_kind(v1::Conditioning::CLASS_LABEL);
         c.mutable_conditioning()->set_num_classes(huge);
       },
       "conditioning.num_classes"},
  };
  for (const Case& test_case : cases) {
    v1::ModelConfig config = testing::MixtureConfig("m", 4);
    test_case.set(config);
    absl::Status status = ValidateModelConfig(config, "m/config.pbtxt");
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << test_case.field;
    EXPECT_NE(status.message().find("m/config.pbtxt: " + test_case.field), std::string::npos)
        << status;
  }
  // Real shapes stay legal: an SDXL latent and its text embedding.
  v1::ModelConfig sdxl = testing::MixtureConfig("sdxl", 4);
  sdxl.clear_sample_shape();
  for (int64_t dim : {4, 128, 128}) sdxl.add_sample_shape(dim);
  sdxl.mutable_conditioning()->set_kind(v1::Conditioning::EMBEDDING);
  sdxl.mutable_conditioning()->add_embedding_shape(77);
  sdxl.mutable_conditioning()->add_embedding_shape(2048);
  EXPECT_TRUE(ValidateModelConfig(sdxl, "sdxl/config.pbtxt").ok());
}

}  // namespace
}  // namespace memaudit
