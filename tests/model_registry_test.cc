// The model registry over a real repository of exact mixture models: load
// states, a failed reload keeping the previous version, an unload racing a
// load, and verdict policies validated at load.
#include "server/model_registry.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "core/text/utf8.h"
#include "tests/server_fixture.h"
#include "tests/test_util.h"

namespace memaudit::server {
namespace {

TEST(ModelRegistryTest, ModelsMoveThroughTheirStates) {
  testing::ServerFixture fixture;
  auto registry = fixture.NewRegistry();
  EXPECT_EQ(registry->ScanRepository(), (std::vector<std::string>{"calibrated", "classes"}));
  EXPECT_EQ(registry->Get("classes").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(registry->Info("classes")->state(), v1::MODEL_UNLOADED);
  EXPECT_EQ(registry->Get("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry->Load("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry->Load("../classes").status().code(), absl::StatusCode::kNotFound);

  auto info = registry->Load("classes");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->state(), v1::MODEL_READY);
  EXPECT_EQ(info->dimension(), testing::kFixtureDim);
  EXPECT_EQ(info->checksum().rfind("sha256:", 0), 0u);
  auto model = registry->Get("classes");
  ASSERT_TRUE(model.ok());
  EXPECT_EQ((*model)->network->config().name(), "classes");

  ASSERT_TRUE(registry->Unload("classes").ok());
  EXPECT_EQ(registry->Info("classes")->state(), v1::MODEL_UNLOADED);
  EXPECT_EQ(registry->Get("classes").status().code(), absl::StatusCode::kUnavailable);
  // A holder of the model keeps it alive after the unload.
  EXPECT_EQ((*model)->network->config().name(), "classes");
  EXPECT_EQ(registry->LoadAll(), 0);
  EXPECT_TRUE(registry->Get("classes").ok());
  EXPECT_TRUE(registry->Get("calibrated").ok());
}

TEST(ModelRegistryTest, AFailedReloadKeepsThePreviousVersionServing) {
  testing::ServerFixture fixture;
  auto registry = fixture.NewRegistry();
  ASSERT_TRUE(registry->Load("classes").ok());
  testing::WriteFile(fixture.repository() + "/classes/config.pbtxt", "name: \"classes\" nonsense");
  auto reload = registry->Load("classes");
  ASSERT_FALSE(reload.ok());
  EXPECT_NE(reload.status().message().find("config.pbtxt"), std::string::npos) << reload.status();
  EXPECT_TRUE(registry->Get("classes").ok());
  auto info = registry->Info("classes");
  EXPECT_EQ(info->state(), v1::MODEL_READY);
  EXPECT_FALSE(info->last_error().empty());
}

TEST(ModelRegistryTest, AnUnloadDuringALoadWins) {
  testing::ServerFixture fixture;
  // A probe forward that takes a while (a few million interpreter steps).
  ASSERT_TRUE(testing::WriteScriptedModel(fixture.repository(), testing::MixtureConfig("slow", 4),
                                          "def forward(self, x: Tensor, t: Tensor) -> Tensor:\n"
                                          "    i = 0\n"
                                          "    while i < 3000000:\n"
                                          "        i = i + 1\n"
                                          "    return x\n")
                  .ok());
  std::mutex mu;
  std::vector<bool> observed;  // `ok` of each observer call
  auto registry = fixture.NewRegistry([&](const std::string&, bool ok, double) {
    std::lock_guard<std::mutex> lock(mu);
    observed.push_back(ok);
  });
  absl::StatusOr<v1::ModelInfo> loaded;
  std::thread loader([&] { loaded = registry->Load("slow"); });
  while (registry->Info("slow")->state() != v1::MODEL_LOADING) std::this_thread::yield();
  ASSERT_TRUE(registry->Unload("slow").ok());
  loader.join();
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kAborted) << loaded.status();
  EXPECT_EQ(registry->Info("slow")->state(), v1::MODEL_UNLOADED);
  EXPECT_EQ(registry->Get("slow").status().code(), absl::StatusCode::kUnavailable);
  ASSERT_FALSE(observed.empty());
  EXPECT_FALSE(observed.back()) << "the observer last heard the model is not serving";
  // A later load is not affected.
  EXPECT_TRUE(registry->Load("slow").ok());
  EXPECT_TRUE(registry->Get("slow").ok());
}

// A model whose probe forward never returns: its load is abandoned after
// the timeout (FAILED, with the reason), a second load of it is refused
// while the first runs, and other models load meanwhile.
TEST(ModelRegistryTest, ALoadThatNeverReturnsIsAbandonedAndBlocksNothing) {
  testing::ServerFixture fixture;
  ASSERT_TRUE(testing::WriteScriptedModel(fixture.repository(), testing::MixtureConfig("stuck", 4),
                                          testing::kForwardThatNeverReturns)
                  .ok());
  auto registry = fixture.NewRegistry({}, absl::Seconds(2));
  std::atomic<bool> stuck_returned{false};
  absl::StatusOr<v1::ModelInfo> stuck;
  const auto start = std::chrono::steady_clock::now();
  std::thread loader([&] {
    stuck = registry->Load("stuck");
    stuck_returned = true;
  });
  while (registry->Info("stuck")->state() != v1::MODEL_LOADING) std::this_thread::yield();
  EXPECT_EQ(registry->Load("stuck").status().code(), absl::StatusCode::kUnavailable);
  auto other = registry->Load("classes");
  EXPECT_TRUE(other.ok()) << other.status();
  EXPECT_FALSE(stuck_returned) << "the other model waited for the stuck one";
  loader.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(stuck.status().code(), absl::StatusCode::kDeadlineExceeded) << stuck.status();
  EXPECT_LT(seconds, 10);
  auto info = registry->Info("stuck");
  EXPECT_EQ(info->state(), v1::MODEL_FAILED);
  EXPECT_NE(info->last_error().find("--model_load_timeout_seconds"), std::string::npos)
      << info->last_error();
  EXPECT_TRUE(registry->Get("classes").ok());
  // Loading it again while the abandoned load still spins is refused at
  // once (each retry used to leave one more thread spinning).
  auto retry = registry->Load("stuck");
  EXPECT_EQ(retry.status().code(), absl::StatusCode::kUnavailable) << retry.status();
  EXPECT_NE(retry.status().message().find("abandoned at the load timeout, is still running"),
            std::string::npos)
      << retry.status();
  // The pass over the repository ends too, with the stuck model failed.
  EXPECT_EQ(registry->LoadAll(), 1);
  EXPECT_TRUE(registry->Get("calibrated").ok());
}

TEST(ModelRegistryTest, AnUnknownEarlyMetricFailsTheLoadNamingTheField) {
  testing::ServerFixture fixture;
  const toy::GaussianMixture mixture = testing::PointMassAndBroadClasses(2, 2);
  ASSERT_TRUE(testing::WriteMixtureDirectory(fixture.repository(), "typo", mixture,
                                             v1::NoiseSchedule::LINEAR, v1::EPSILON, 2)
                  .ok());
  // Written by hand, as a user would (the writer validates its configs).
  std::ofstream(fixture.repository() + "/typo/config.pbtxt", std::ios::app)
      << "verdict_policy { early_metric: \"jeon\" }\n";
  auto registry = fixture.NewRegistry();
  auto loaded = registry->Load("typo");
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("verdict_policy.early_metric"), std::string::npos)
      << loaded.status();
  EXPECT_NE(loaded.status().message().find("jeon_sharpness"), std::string::npos)
      << "lists the known names: " << loaded.status();
  EXPECT_EQ(registry->Info("typo")->state(), v1::MODEL_FAILED);
  auto calibrated = registry->Load("calibrated");
  ASSERT_TRUE(calibrated.ok()) << calibrated.status();
  EXPECT_EQ((*registry->Get("calibrated"))->policy.early_metric, EarlyMetric::kJeonSharpness);
}

// A mixture model directory `name` whose model.pt
// tests/fixtures/make_damaged_archives.py then rewrites (`mode`, e.g.
// --protocol-ff, with `argument` after the file).
void WriteRewrittenMixture(const testing::ServerFixture& fixture, const std::string& name,
                           const std::string& mode, const std::string& argument) {
  ASSERT_TRUE(testing::WriteMixtureDirectory(fixture.repository(), name,
                                             testing::PointMassAndBroadClasses(2, 2),
                                             v1::NoiseSchedule::LINEAR, v1::EPSILON, 2)
                  .ok());
  testing::RunCommand(std::string(MEMAUDIT_PYTHON) + " " + MEMAUDIT_FIXTURES +
                      "/make_damaged_archives.py " + mode + " " + fixture.repository() + "/" +
                      name + "/model.pt " + argument);
}

// A load error may quote the model's bytes (LibTorch names the pickle
// protocol byte it found); ModelInfo.last_error is a protobuf string, which
// must be UTF-8 or the client cannot parse the whole ListModels answer.
TEST(ModelRegistryTest, ALoadErrorQuotingBytesThatAreNotUtf8IsValidUtf8) {
  testing::ServerFixture fixture;
  ASSERT_NO_FATAL_FAILURE(WriteRewrittenMixture(fixture, "bytes", "--protocol-ff", ""));
  auto registry = fixture.NewRegistry();
  ASSERT_FALSE(registry->Load("bytes").ok());
  const std::string error = registry->Info("bytes")->last_error();
  EXPECT_TRUE(IsValidUtf8(error)) << error;
  EXPECT_NE(error.find("protocol = \xEF\xBF\xBD"), std::string::npos) << error;
}

// TorchScript's parser recurses once per level of the code's nesting; the
// archive check allows statements of up to 32 KiB, and a load runs on a
// thread whose stack holds them: 30,000 unary minuses (a server's peak
// memory 363 MB against 206 MB for plain models) crashed the server on a
// default 8 MiB thread.
TEST(ModelRegistryTest, CodeNestedAsDeepAsTheArchiveCheckAllowsLoads) {
  testing::ServerFixture fixture;
  ASSERT_NO_FATAL_FAILURE(WriteRewrittenMixture(fixture, "deep", "--deep-forward", "30000"));
  auto registry = fixture.NewRegistry();
  auto loaded = registry->Load("deep");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->state(), v1::MODEL_READY);
}

// Model directories and files must stay inside the repository; errors
// name paths relative to it and cut long names.
TEST(ModelRegistryTest, NothingOutsideTheRepositoryIsRead) {
  testing::ServerFixture fixture;
  testing::ScratchDir elsewhere;
  namespace fs = std::filesystem;
  // A model directory that is a link to a model outside the repository.
  ASSERT_TRUE(testing::WriteMixtureDirectory(elsewhere.path(), "outside",
                                             testing::PointMassAndBroadClasses(2, 2),
                                             v1::NoiseSchedule::LINEAR, v1::EPSILON, 2)
                  .ok());
  fs::create_directory_symlink(elsewhere.Join("outside"), fixture.repository() + "/outside");
  // A model whose config.pbtxt is a link to a file outside its directory.
  fs::create_directories(fixture.repository() + "/leaky");
  fs::copy_file(fixture.repository() + "/classes/model.pt",
                fixture.repository() + "/leaky/model.pt");
  testing::WriteFile(elsewhere.Join("secret.txt"), "root:x:0:0:root:/root:/bin/bash\n");
  fs::create_symlink(elsewhere.Join("secret.txt"), fixture.repository() + "/leaky/config.pbtxt");

  auto registry = fixture.NewRegistry();
  auto outside = registry->Load("outside");
  ASSERT_FALSE(outside.ok());
  EXPECT_NE(outside.status().message().find("links outside the repository"), std::string::npos)
      << outside.status();
  auto leaky = registry->Load("leaky");
  ASSERT_FALSE(leaky.ok());
  EXPECT_NE(leaky.status().message().find("config.pbtxt links outside"), std::string::npos)
      << leaky.status();
  EXPECT_EQ(leaky.status().message().find("root"), std::string::npos) << leaky.status();
  EXPECT_EQ(registry->Info("leaky")->state(), v1::MODEL_FAILED);

  // Errors do not show where the repository is on the server.
  testing::WriteFile(fixture.repository() + "/classes/model.pt", "not an archive");
  auto broken = registry->Load("classes");
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.status().message().find("classes/model.pt"), std::string::npos)
      << broken.status();
  EXPECT_EQ(broken.status().message().find(fixture.repository()), std::string::npos)
      << broken.status();

  const std::string long_name(8192, 'a');
  auto unknown = registry->Get(long_name);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_LT(unknown.status().message().size(), 200u) << unknown.status();
}

}  // namespace
}  // namespace memaudit::server
