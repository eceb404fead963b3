// A model repository of exact class-conditional mixtures for the server/
// unit tests (no gRPC): class 0 of each model is a point mass, so every
// sample of it is a copy; the other classes are broad Gaussians.
#ifndef MEMAUDIT_TESTS_SERVER_FIXTURE_H_
#define MEMAUDIT_TESTS_SERVER_FIXTURE_H_

#include <memory>
#include <string>

#include "server/model_registry.h"
#include "tests/test_util.h"

namespace memaudit::testing {

inline constexpr int64_t kFixtureDim = 4;
inline constexpr int64_t kFixtureClasses = 3;

// Models written to the repository:
//   "classes"     the mixture above, default verdict policy;
//   "calibrated"  the same with verdict_policy { early_metric:
//                 "jeon_sharpness" early_threshold: 1 }.
class ServerFixture {
 public:
  ServerFixture();  // records a test failure if writing fails
  const std::string& repository() const { return dir_.path(); }
  // A registry over the repository (nothing loaded). `forward_observer`
  // as CheckpointOptions' (called after every network call).
  std::unique_ptr<server::ModelRegistry> NewRegistry(
      server::ModelRegistry::LoadObserver observer = {},
      absl::Duration load_timeout = server::ModelRegistry::kDefaultLoadTimeout,
      std::function<void(int64_t rows, bool with_gradient)> forward_observer = {}) const;

 private:
  ScratchDir dir_;
};

}  // namespace memaudit::testing

#endif  // MEMAUDIT_TESTS_SERVER_FIXTURE_H_
