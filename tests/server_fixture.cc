#include "tests/server_fixture.h"

#include <gtest/gtest.h>

namespace memaudit::testing {

ServerFixture::ServerFixture() {
  const toy::GaussianMixture mixture = PointMassAndBroadClasses(kFixtureDim, kFixtureClasses);
  EXPECT_TRUE(WriteMixtureDirectory(dir_.path(), "classes", mixture, v1::NoiseSchedule::LINEAR,
                                    v1::EPSILON, kFixtureClasses)
                  .ok());
  EXPECT_TRUE(WriteMixtureDirectory(dir_.path(), "calibrated", mixture, v1::NoiseSchedule::LINEAR,
                                    v1::EPSILON, kFixtureClasses,
                                    [](v1::ModelConfig* config) {
                                      v1::VerdictPolicy* policy = config->mutable_verdict_policy();
                                      policy->set_early_metric("jeon_sharpness");
                                      policy->set_early_threshold(1.0);
                                    })
                  .ok());
}

std::unique_ptr<server::ModelRegistry> ServerFixture::NewRegistry(
    server::ModelRegistry::LoadObserver observer, absl::Duration load_timeout,
    std::function<void(int64_t rows, bool with_gradient)> forward_observer) const {
  CheckpointOptions options;
  options.dtype = at::kDouble;
  options.forward_observer = std::move(forward_observer);
  return std::make_unique<server::ModelRegistry>(dir_.path(), options, std::move(observer),
                                                 kDefaultMaxDenseDimension, load_timeout);
}

}  // namespace memaudit::testing
