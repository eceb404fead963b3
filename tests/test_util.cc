#include "tests/test_util.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/base/status_macros.h"
#include "core/verdict/verdict.h"
#include "tools/toy/model_directory.h"

namespace memaudit::testing {

ScratchDir::ScratchDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "memaudit-test-XXXXXX").string();
  char* made = mkdtemp(pattern.data());
  if (made == nullptr) std::abort();
  path_ = made;
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string RunCommand(const std::string& command) {
  std::array<char, 512> buffer{};
  std::string output;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "could not run: " << command;
    return output;
  }
  while (fgets(buffer.data(), buffer.size(), pipe) != nullptr) output += buffer.data();
  const int rc = pclose(pipe);
  EXPECT_EQ(rc, 0) << command << "\n" << output;
  return output;
}

VerdictRates CountVerdicts(const std::vector<SampleCurvature>& samples,
                           const v1::VerdictPolicy& config, const ReferenceSet* reference) {
  const ResolvedPolicy policy = ResolvePolicy(config, reference);
  VerdictRates rates;
  for (const SampleCurvature& sample : samples) {
    const NearestNeighbor& truth = *sample.truth;
    const bool memorized =
        JudgeSample(sample.spectra.front().summary, policy,
                    reference != nullptr ? &truth : nullptr) == Verdict::kMemorized;
    if (truth.is_copy() && truth.multiplicity > 1) {
      ++rates.copies;
      rates.flagged_copies += memorized;
    } else if (!truth.is_copy()) {
      ++rates.others;
      rates.flagged_others += memorized;
      if (truth.multiplicity <= 1) {
        ++rates.novel;
        rates.flagged_novel += memorized;
      }
    }
  }
  return rates;
}

v1::ModelConfig MixtureConfig(const std::string& name, int64_t dim,
                              v1::NoiseSchedule::Kind schedule, v1::PredictionType prediction,
                              int64_t num_classes) {
  v1::ModelConfig config;
  config.set_name(name);
  config.add_sample_shape(dim);
  config.set_prediction_type(prediction);
  *config.mutable_noise_schedule() = toy::DefaultSchedule(schedule);
  if (num_classes > 0) {
    config.mutable_conditioning()->set_kind(v1::Conditioning::CLASS_LABEL);
    config.mutable_conditioning()->set_num_classes(num_classes);
  } else {
    config.mutable_conditioning()->set_kind(v1::Conditioning::NONE);
  }
  return config;
}

absl::Status WriteMixtureDirectory(const std::string& repository, const std::string& name,
                                   const toy::GaussianMixture& mixture,
                                   v1::NoiseSchedule::Kind schedule, v1::PredictionType prediction,
                                   int64_t num_classes,
                                   const std::function<void(v1::ModelConfig*)>& edit) {
  v1::ModelConfig config = MixtureConfig(name, mixture.dim(), schedule, prediction, num_classes);
  if (edit) edit(&config);
  ASSIGN_OR_RETURN(const NoiseSchedule noise, NoiseSchedule::Create(config.noise_schedule()));
  ASSIGN_OR_RETURN(const torch::jit::Module module,
                   toy::BuildGaussianMixtureModule(mixture, noise, prediction, num_classes));
  return toy::WriteModelDirectory(repository, config, module);
}

toy::GaussianMixture PointMassAndBroadClasses(int64_t dim, int64_t classes) {
  const auto options = at::TensorOptions().dtype(at::kDouble);
  toy::GaussianMixture mixture;
  mixture.weights = at::ones({classes}, options);
  mixture.means = at::zeros({classes, dim}, options);
  for (int64_t c = 0; c < classes; ++c) mixture.means[c].fill_(2.0 * static_cast<double>(c));
  mixture.covariances = at::eye(dim, options).unsqueeze(0).repeat({classes, 1, 1});
  mixture.covariances[0].mul_(1e-6);
  mixture.classes = at::arange(classes, at::TensorOptions().dtype(at::kLong));
  return mixture;
}

std::shared_ptr<const DiffusionNetwork> WriteAndLoadMixture(
    const std::string& repository, const std::string& name, const toy::GaussianMixture& mixture,
    v1::NoiseSchedule::Kind schedule, v1::PredictionType prediction, at::ScalarType dtype,
    int64_t num_classes) {
  absl::Status written =
      WriteMixtureDirectory(repository, name, mixture, schedule, prediction, num_classes);
  EXPECT_TRUE(written.ok()) << written;
  if (!written.ok()) return nullptr;
  CheckpointOptions options;
  options.dtype = dtype;
  auto checkpoint = LoadModel(repository + "/" + name, options);
  EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
  return checkpoint.ok() ? *checkpoint : nullptr;
}

absl::Status WriteScriptedModel(const std::string& repository, const v1::ModelConfig& config,
                                const std::string& source) {
  torch::jit::Module module("__torch__.memaudit.test.Custom");
  module.register_parameter("scale", at::ones({1}), false);
  module.define(source);
  return toy::WriteModelDirectory(repository, config, module);
}

void WriteFile(const std::string& path, const std::string& contents) {
  {
    std::ofstream out(path, std::ios::binary);
    out << contents;
  }
  // 0644 whatever the umask: the server refuses token files that group or
  // others may write (a umask of 002 would make them so).
  std::filesystem::permissions(
      path,
      std::filesystem::perms::owner_read | std::filesystem::perms::owner_write |
          std::filesystem::perms::group_read | std::filesystem::perms::others_read,
      std::filesystem::perm_options::replace);
}

}  // namespace memaudit::testing
