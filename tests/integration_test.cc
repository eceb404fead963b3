// End-to-end: a real memaudit-server process on ephemeral loopback ports,
// driven by the real client library and the real `memaudit` CLI.
// Each test is its own CTest entry and process, with a server of its own over
// its own copy of the model repository: CTest's integration_repository
// fixture writes the repository once per run (IntegrationRepository.Write,
// registered only when MEMAUDIT_WRITE_INTEGRATION_MODELS names the
// directory) and the suite copies it from MEMAUDIT_INTEGRATION_MODELS; run
// by hand without it, the suite writes its own. Tests may change their
// server and repository freely; nothing outlives the process.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <array>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "client/sample_files.h"
#include "core/runtime/tensor_file.h"
#include "google/protobuf/text_format.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "tests/server_process.h"
#include "tests/test_util.h"
#include "tools/toy/model_directory.h"

namespace memaudit {
namespace {

namespace fs = std::filesystem;
using client::Client;
using client::TensorValues;

constexpr int64_t kDuplicates = 100;
constexpr int kMaxConcurrentJobs = 2;
constexpr int kMaxQueuedJobs = 3;
constexpr int kMaxWatchStreams = 4;

using testing::CommandResult;
using testing::ServerProcess;

CommandResult RunCommand(const std::string& command) { return testing::RunShell(command); }

// Copies model `from` of `repository` to a model named `to` (its folder
// and its config's name); ASSERTs inside.
void CopyModel(const std::string& repository, const std::string& from, const std::string& to) {
  const std::string dir = repository + "/" + to;
  fs::copy(repository + "/" + from, dir, fs::copy_options::recursive);
  v1::ModelConfig config;
  std::ifstream config_in(dir + "/config.pbtxt");
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(
      std::string(std::istreambuf_iterator<char>(config_in), {}), &config));
  config.set_name(to);
  std::string config_text;
  google::protobuf::TextFormat::PrintToString(config, &config_text);
  testing::WriteFile(dir + "/config.pbtxt", config_text);
}

// The test repository:
//   mix     exact model, d = 4: a point (weight 0.3, variance 1e-6) 5 units
//           from a standard normal cloud (0.7); reference = the point ×100
//           + 300 cloud draws. Copies of the point are memorized.
//   slow    exact 64-d mixture, for long-running work.
//   imgcopy a [1, 4, 4] image model, half its mass a point the reference set
//           repeats (copies for the HTML report).
//   broken  a corrupt model.pt.
void WriteRepository(const std::string& repository) {
  const int64_t d = 4;
  toy::GaussianMixture mix;
  mix.weights = at::tensor({0.3, 0.7}, at::kDouble);
  mix.means = at::zeros({2, d}, at::kDouble);
  mix.means[0][0] = 5.0;
  mix.covariances = at::stack({1e-6 * at::eye(d, at::kDouble), at::eye(d, at::kDouble)});
  at::manual_seed(0);
  at::Tensor reference_items = at::cat({mix.means[0].unsqueeze(0).expand({kDuplicates, d}),
                                        at::randn({300, d}, at::kDouble)})
                                   .to(at::kFloat);
  auto reference = ReferenceSet::FromTensor(reference_items);
  ASSERT_TRUE(reference.ok());
  v1::ModelConfig config = testing::MixtureConfig("mix", d);
  auto schedule = NoiseSchedule::Create(config.noise_schedule());
  auto module = toy::BuildGaussianMixtureModule(mix, *schedule, v1::EPSILON);
  ASSERT_TRUE(module.ok());
  ASSERT_TRUE(toy::WriteModelDirectory(repository, config, *module, &*reference).ok());

  v1::ModelConfig slow_config = testing::MixtureConfig("slow", 64);
  auto slow =
      toy::BuildGaussianMixtureModule(toy::RandomGaussianMixture(64, 8, 1), *schedule, v1::EPSILON);
  ASSERT_TRUE(slow.ok());
  ASSERT_TRUE(toy::WriteModelDirectory(repository, slow_config, *slow).ok());

  // An image-shaped exact model ([1, 4, 4]) for PNG output.
  v1::ModelConfig image_config = testing::MixtureConfig("img", 16);
  image_config.clear_sample_shape();
  for (int64_t dim : {1, 4, 4}) image_config.add_sample_shape(dim);
  auto image =
      toy::BuildGaussianMixtureModule(toy::RandomGaussianMixture(16, 2, 3), *schedule, v1::EPSILON);
  ASSERT_TRUE(image.ok());
  ASSERT_TRUE(toy::WriteModelDirectory(repository, image_config, *image).ok());
  // An image-shaped model that memorizes: half its mass a point (a fixed
  // 4×4 pattern) that the reference set repeats 20 times, half a broad
  // Gaussian around 0 (100 draws in the reference set).
  {
    const int64_t d_image = 16;
    toy::GaussianMixture copies;
    copies.weights = at::tensor({0.5, 0.5}, at::kDouble);
    const at::Tensor pattern =
        (at::arange(d_image, at::kDouble).remainder(2) * 1.6 - 0.8).unsqueeze(0);
    copies.means = at::cat({pattern, at::zeros({1, d_image}, at::kDouble)});
    copies.covariances =
        at::stack({1e-6 * at::eye(d_image, at::kDouble), 0.25 * at::eye(d_image, at::kDouble)});
    at::manual_seed(1);
    auto items = ReferenceSet::FromTensor(
        at::cat({pattern.expand({20, d_image}), 0.5 * at::randn({100, d_image}, at::kDouble)})
            .reshape({120, 1, 4, 4})
            .to(at::kFloat));
    ASSERT_TRUE(items.ok());
    v1::ModelConfig copies_config = testing::MixtureConfig("imgcopy", d_image);
    copies_config.clear_sample_shape();
    for (int64_t dim : {1, 4, 4}) copies_config.add_sample_shape(dim);
    auto copies_module = toy::BuildGaussianMixtureModule(copies, *schedule, v1::EPSILON);
    ASSERT_TRUE(copies_module.ok());
    ASSERT_TRUE(toy::WriteModelDirectory(repository, copies_config, *copies_module, &*items).ok());
  }
  // A model whose reload will fail while the loaded version keeps serving.
  v1::ModelConfig reload_config = testing::MixtureConfig("reloadable", 2);
  auto reloadable =
      toy::BuildGaussianMixtureModule(toy::RandomGaussianMixture(2, 2, 4), *schedule, v1::EPSILON);
  ASSERT_TRUE(reloadable.ok());
  ASSERT_TRUE(toy::WriteModelDirectory(repository, reload_config, *reloadable).ok());

  // Calibration fixture: 20 classes in 8-D, one component each, all centred
  // at the origin so that they differ only in sharpness (which the early
  // metrics see). Classes 0..9 are single training points (variance 1e-5:
  // memorized); classes 10..19 are broad Gaussians (covariance 0.5·I).
  {
    const int64_t d = 8, classes = 20;
    toy::GaussianMixture calib;
    calib.weights = at::ones({classes}, at::kDouble);
    calib.means = at::zeros({classes, d}, at::kDouble);
    std::vector<at::Tensor> covariances;
    for (int64_t c = 0; c < classes; ++c) {
      covariances.push_back((c < 10 ? 1e-5 : 0.5) * at::eye(d, at::kDouble));
    }
    calib.covariances = at::stack(covariances);
    calib.classes = at::arange(classes, at::kLong);
    v1::ModelConfig calib_config =
        testing::MixtureConfig("calib", d, v1::NoiseSchedule::SCALED_LINEAR, v1::EPSILON, classes);
    auto scaled = NoiseSchedule::Create(calib_config.noise_schedule());
    auto calib_module = toy::BuildGaussianMixtureModule(calib, *scaled, v1::EPSILON, classes);
    ASSERT_TRUE(calib_module.ok());
    ASSERT_TRUE(toy::WriteModelDirectory(repository, calib_config, *calib_module).ok());
  }

  // Label-free fixture: 12 classes in 8-D, never calibrated, all centred at
  // the origin so that they differ only in sharpness. Class 0 is a single
  // training point (memorized); classes 1..11 are the same broad Gaussian.
  {
    const int64_t d = 8, classes = 12;
    toy::GaussianMixture mixture;
    mixture.weights = at::ones({classes}, at::kDouble);
    mixture.means = at::zeros({classes, d}, at::kDouble);
    std::vector<at::Tensor> covariances;
    for (int64_t c = 0; c < classes; ++c) {
      covariances.push_back((c == 0 ? 1e-5 : 0.5) * at::eye(d, at::kDouble));
    }
    mixture.covariances = at::stack(covariances);
    mixture.classes = at::arange(classes, at::kLong);
    v1::ModelConfig config =
        testing::MixtureConfig("outliers", d, v1::NoiseSchedule::LINEAR, v1::EPSILON, classes);
    auto module = toy::BuildGaussianMixtureModule(mixture, *schedule, v1::EPSILON, classes);
    ASSERT_TRUE(module.ok());
    ASSERT_TRUE(toy::WriteModelDirectory(repository, config, *module).ok());
  }

  // An embedding-conditioned exact model (2 classes as one-hot embeddings)
  // with its null condition stored as null_condition.pt.
  {
    v1::ModelConfig emb_config = testing::MixtureConfig("emb", 4);
    emb_config.mutable_conditioning()->set_kind(v1::Conditioning::EMBEDDING);
    emb_config.mutable_conditioning()->add_embedding_shape(2);
    auto emb =
        toy::BuildGaussianMixtureModule(toy::RandomGaussianMixture(4, 4, 6, 2), *schedule,
                                        v1::EPSILON, 2, toy::MixtureConditioning::kEmbedding);
    ASSERT_TRUE(emb.ok());
    ASSERT_TRUE(toy::WriteModelDirectory(repository, emb_config, *emb).ok());
    ASSERT_TRUE(SaveTensorFile(repository + "/emb/null_condition.pt", at::zeros({2})).ok());
  }

  // A tiny text-to-image latent model exported by tools/export, with a
  // reference set of 12 images (decoded-image truth).
  testing::RunCommand(std::string(MEMAUDIT_PYTHON) + " " + MEMAUDIT_SOURCE_DIR +
                      "/tools/export/make_tiny_pipeline_dir.py " + repository + " t2i 2>&1");
  ASSERT_TRUE(
      SaveTensorFile(repository + "/t2i/reference.pt", at::rand({12, 3, 32, 32}) * 2 - 1).ok());
  // The same model whose tokenizer.json splits with a pattern that
  // backtracks catastrophically on "aaa…a!": one such prompt used to pin a
  // gRPC thread forever.
  {
    const std::string dir = repository + "/t2i_backtrack";
    ASSERT_NO_FATAL_FAILURE(CopyModel(repository, "t2i", "t2i_backtrack"));
    std::ifstream tokenizer_in(dir + "/tokenizer.json");
    nlohmann::json tokenizer = nlohmann::json::parse(tokenizer_in);
    tokenizer["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", "(?:a+)+$"}}}, {"behavior", "Isolated"}},
          tokenizer["pre_tokenizer"]}}};
    testing::WriteFile(dir + "/tokenizer.json", tokenizer.dump());
  }
  // The same model with a text encoder whose output is detached from its
  // token table: token attribution fails there, the audit must not.
  {
    const std::string dir = repository + "/t2i_detached";
    ASSERT_NO_FATAL_FAILURE(CopyModel(repository, "t2i", "t2i_detached"));
    testing::RunCommand(std::string(MEMAUDIT_PYTHON) + " " + MEMAUDIT_FIXTURES +
                        "/detach_text_encoder.py " + dir + " 2>&1");
  }
  // A config whose embedding the load probe could not allocate (80 GB): it
  // used to abort the whole server at start.
  fs::create_directories(repository + "/huge");
  v1::ModelConfig huge = testing::MixtureConfig("huge", 4);
  huge.mutable_conditioning()->set_kind(v1::Conditioning::EMBEDDING);
  huge.mutable_conditioning()->add_embedding_shape(100000);
  huge.mutable_conditioning()->add_embedding_shape(100000);
  std::string huge_text;
  google::protobuf::TextFormat::PrintToString(huge, &huge_text);
  testing::WriteFile(repository + "/huge/config.pbtxt", huge_text);
  fs::copy_file(repository + "/mix/model.pt", repository + "/huge/model.pt");

  fs::create_directories(repository + "/broken");
  std::string text;
  google::protobuf::TextFormat::PrintToString(testing::MixtureConfig("broken", 2), &text);
  testing::WriteFile(repository + "/broken/config.pbtxt", text);
  testing::WriteFile(repository + "/broken/model.pt", "not a TorchScript archive");
}

// Marks a prepared repository as completely written (removed from copies).
constexpr char kRepositoryComplete[] = ".complete";

// IntegrationRepository.Write, for the CTest fixture: writes the repository
// into $MEMAUDIT_WRITE_INTEGRATION_MODELS (replacing what is there).
class WriteRepositoryTest : public ::testing::Test {
 public:
  explicit WriteRepositoryTest(std::string directory) : directory_(std::move(directory)) {}
  void TestBody() override {
    fs::remove_all(directory_);
    WriteRepository(directory_);
    if (!HasFailure()) testing::WriteFile(directory_ + "/" + kRepositoryComplete, "");
  }

 private:
  std::string directory_;
};

[[maybe_unused]] const bool kWriteRepositoryRegistered = [] {
  const char* directory = std::getenv("MEMAUDIT_WRITE_INTEGRATION_MODELS");
  if (directory == nullptr) return false;
  ::testing::RegisterTest("IntegrationRepository", "Write", nullptr, nullptr, __FILE__, __LINE__,
                          [dir = std::string(directory)]() -> ::testing::Test* {
                            return new WriteRepositoryTest(dir);
                          });
  return true;
}();

// The suite's server flags.
std::vector<std::string> ServerFlags() {
  return {"--max_concurrent_jobs=" + std::to_string(kMaxConcurrentJobs),
          "--max_queued_jobs=" + std::to_string(kMaxQueuedJobs),
          "--max_watch_streams=" + std::to_string(kMaxWatchStreams),
          "--shutdown_grace_seconds=5",
          "--max_request_memory_mib=256",
          "--serve_training_items"};
}

class IntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = new testing::ScratchDir();
    const char* prepared = std::getenv("MEMAUDIT_INTEGRATION_MODELS");
    if (prepared != nullptr && fs::exists(fs::path(prepared) / kRepositoryComplete)) {
      fs::copy(prepared, scratch_->Join("models"), fs::copy_options::recursive);
      fs::remove(fs::path(scratch_->Join("models")) / kRepositoryComplete);
    } else {
      WriteRepository(scratch_->Join("models"));
    }
    server_ = new ServerProcess(MEMAUDIT_SERVER_BINARY, scratch_->Join("models"), scratch_->path(),
                                ServerFlags());
    ASSERT_GT(server_->grpc_port(), 0) << server_->Log();
    ASSERT_TRUE(WaitUntilServing(*server_)) << server_->Log();
  }
  // Health turns SERVING once the initial model load pass is over.
  static bool WaitUntilServing(const ServerProcess& server) {
    return Client(server.target(), std::chrono::seconds(5))
        .WaitUntilServing(std::chrono::seconds(60))
        .ok();
  }
  static void TearDownTestSuite() {
    delete server_;
    delete scratch_;
  }
  Client client() const { return Client(server_->target(), std::chrono::seconds(60)); }
  std::string Cli(const std::string& args) const {
    return std::string(MEMAUDIT_CLI_BINARY) + " --server " + server_->target() + " " + args;
  }
  std::string Scrape() const {
    httplib::Client http("127.0.0.1", server_->metrics_port());
    auto response = http.Get("/metrics");
    return response && response->status == 200 ? response->body : "";
  }
  double NetworkEvaluations() const {
    double total = 0;
    std::istringstream lines(Scrape());
    std::string line;
    while (std::getline(lines, line)) {
      if (line.rfind("memaudit_network_evaluations_total{", 0) == 0) {
        total += std::stod(line.substr(line.rfind(' ') + 1));
      }
    }
    return total;
  }

  static testing::ScratchDir* scratch_;
  static ServerProcess* server_;
};

testing::ScratchDir* IntegrationTest::scratch_ = nullptr;
ServerProcess* IntegrationTest::server_ = nullptr;

TEST_F(IntegrationTest, HealthPerServiceAndReflection) {
  Client c = client();
  for (const std::string service : {"", "memaudit.v1.ModelService", "memaudit.v1.AuditService"}) {
    auto health = c.Health(service);
    ASSERT_TRUE(health.ok()) << health.status();
    EXPECT_EQ(*health, "SERVING") << service;
  }
  EXPECT_EQ(c.Health("no.such.Service").status().code(), absl::StatusCode::kNotFound);
  // The Watch-based wait returns at once for a SERVING server, and names the
  // deadline where nothing ever serves (a port nobody listens on).
  EXPECT_TRUE(c.WaitUntilServing(std::chrono::seconds(5)).ok());
  EXPECT_TRUE(c.WaitUntilServing(std::chrono::seconds(5), "memaudit.v1.AuditService").ok());
  const absl::Status nobody = Client("127.0.0.1:1", std::chrono::seconds(5))
                                  .WaitUntilServing(std::chrono::milliseconds(300));
  EXPECT_EQ(nobody.code(), absl::StatusCode::kDeadlineExceeded) << nobody;
  EXPECT_NE(nobody.message().find("not SERVING within 0.3 s"), std::string::npos) << nobody;
  CommandResult waited = RunCommand(Cli("health --wait 5 2>&1"));
  EXPECT_EQ(waited.exit_code, 0) << waited.output;
  EXPECT_EQ(waited.output, "SERVING\n");
  waited =
      RunCommand(std::string(MEMAUDIT_CLI_BINARY) + " --server 127.0.0.1:1 health --wait 0.3 2>&1");
  EXPECT_EQ(waited.exit_code, 1);
  EXPECT_EQ(waited.output.rfind("memaudit: DEADLINE_EXCEEDED", 0), 0u) << waited.output;

  auto channel = grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials());
  auto stub = grpc::reflection::v1alpha::ServerReflection::NewStub(channel);
  grpc::ClientContext context;
  auto stream = stub->ServerReflectionInfo(&context);
  grpc::reflection::v1alpha::ServerReflectionRequest request;
  request.set_list_services("");
  ASSERT_TRUE(stream->Write(request));
  grpc::reflection::v1alpha::ServerReflectionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  stream->WritesDone();
  std::set<std::string> services;
  for (const auto& service : response.list_services_response().service()) {
    services.insert(service.name());
  }
  EXPECT_TRUE(services.count("memaudit.v1.AuditService"));
  EXPECT_TRUE(services.count("memaudit.v1.ModelService"));
  EXPECT_TRUE(services.count("grpc.health.v1.Health"));
}

TEST_F(IntegrationTest, ModelsListedAndBadModelDoesNotStopOthers) {
  auto models = client().ListModels();
  ASSERT_TRUE(models.ok());
  std::map<std::string, v1::ModelInfo> by_name;
  for (const auto& m : models->models()) by_name[m.name()] = m;
  ASSERT_EQ(by_name.size(), 13u);
  EXPECT_EQ(by_name["mix"].state(), v1::MODEL_READY);
  // A hostile tokenizer.json loads: it only hurts on some prompts.
  EXPECT_EQ(by_name["t2i_backtrack"].state(), v1::MODEL_READY)
      << by_name["t2i_backtrack"].last_error();
  EXPECT_EQ(by_name["t2i"].state(), v1::MODEL_READY) << by_name["t2i"].last_error();
  EXPECT_EQ(by_name["t2i"].reference_size(), 12);  // images, not latents
  EXPECT_TRUE(by_name["t2i"].config().conditioning().has_text_encoder());
  EXPECT_EQ(by_name["slow"].state(), v1::MODEL_READY);
  EXPECT_EQ(by_name["mix"].reference_size(), 400);
  EXPECT_EQ(by_name["mix"].checksum().rfind("sha256:", 0), 0u);
  EXPECT_EQ(by_name["broken"].state(), v1::MODEL_FAILED);
  EXPECT_NE(by_name["broken"].last_error().find("model.pt"), std::string::npos);
  EXPECT_EQ(by_name["huge"].state(), v1::MODEL_FAILED);
  EXPECT_NE(by_name["huge"].last_error().find("conditioning.embedding_shape"), std::string::npos)
      << by_name["huge"].last_error();
  // Using the broken model says why; reloading it reports the load error.
  v1::SpectrumRequest request;
  request.set_model("broken");
  request.set_seed(1);
  auto spectrum = client().Spectrum(request);
  EXPECT_EQ(spectrum.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(spectrum.status().message().find("failed to load"), std::string::npos);
  // A fault in the server's model directory is not the caller's invalid
  // argument (alerts on server-side errors must see it).
  auto reload = client().LoadModel("broken");
  EXPECT_EQ(reload.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(reload.status().message().find("model.pt"), std::string::npos);
}

// A tokenizer.json whose regex backtracks catastrophically on a prompt used
// to pin a gRPC thread per call, past every deadline (SIGTERM ended only
// through the watchdog). Now prompts are tokenized on the planning pool with
// the caller's deadline, and a prompt's regex work is bounded.
TEST_F(IntegrationTest, BacktrackingTokenizerRegexesHonourDeadlinesAndLimits) {
  v1::SampleRequest hostile;
  hostile.set_model("t2i_backtrack");
  hostile.add_seeds(1);
  hostile.mutable_sampling()->set_num_steps(2);
  hostile.mutable_condition()->set_prompt(std::string(60, 'a') + "!");
  using Clock = std::chrono::steady_clock;
  const auto seconds_since = [](Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
  };

  // Six callers at once with 300 ms deadlines: each gets its deadline, not
  // a wait behind the others' regexes.
  std::vector<std::thread> callers;
  std::vector<absl::Status> statuses(6);
  std::vector<double> waited(6);
  for (int i = 0; i < 6; ++i) {
    callers.emplace_back([&, i] {
      const auto start = Clock::now();
      statuses[i] =
          Client(server_->target(), std::chrono::milliseconds(300)).Sample(hostile).status();
      waited[i] = seconds_since(start);
    });
  }
  for (std::thread& caller : callers) caller.join();
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(statuses[i].code(), absl::StatusCode::kDeadlineExceeded) << statuses[i];
    EXPECT_LT(waited[i], 5.0);
  }

  // The server is not pinned: a harmless prompt on the same model is served.
  v1::SampleRequest harmless = hostile;
  harmless.mutable_condition()->set_prompt("a photo");
  auto served = client().Sample(harmless);
  EXPECT_TRUE(served.ok()) << served.status();

  // Without a deadline the regex budget ends it, naming the pattern.
  const auto start = Clock::now();
  auto bounded = client().Sample(hostile);
  EXPECT_EQ(bounded.status().code(), absl::StatusCode::kResourceExhausted) << bounded.status();
  EXPECT_NE(bounded.status().message().find(
                "condition.prompt: pre_tokenizer.pretokenizers[0].pattern: the regex gave up "
                "after"),
            std::string::npos)
      << bounded.status();
  EXPECT_LT(seconds_since(start), 30.0);
  v1::AuditRequest audit;
  audit.set_model("t2i_backtrack");
  *audit.add_conditions() = hostile.condition();
  auto submitted = client().SubmitAudit(audit);
  EXPECT_EQ(submitted.status().code(), absl::StatusCode::kResourceExhausted) << submitted.status();
}

TEST_F(IntegrationTest, UnknownModelIsNotFound) {
  v1::SpectrumRequest request;
  request.set_model("no-such-model");
  request.set_seed(1);
  EXPECT_EQ(client().Spectrum(request).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client().GetModel("no-such-model").status().code(), absl::StatusCode::kNotFound);
  v1::AuditRequest audit;
  audit.set_model("no-such-model");
  EXPECT_EQ(client().SubmitAudit(audit).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client().GetAudit("audit-000000000000").status().code(), absl::StatusCode::kNotFound);
  // Any echo of a long input is cut at the RPC boundary (an 8 KB job id).
  auto long_id = client().GetAudit(std::string(8192, 'j'));
  EXPECT_EQ(long_id.status().code(), absl::StatusCode::kNotFound) << long_id.status();
  EXPECT_LT(long_id.status().message().size(), 2200u);
  // A very long name is NOT_FOUND too (its echo once overflowed the
  // response metadata: RESOURCE_EXHAUSTED).
  auto long_name = client().GetModel(std::string(8192, 'm'));
  EXPECT_EQ(long_name.status().code(), absl::StatusCode::kNotFound) << long_name.status();
  request.set_model(std::string(8192, 'm'));
  EXPECT_EQ(client().Spectrum(request).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(IntegrationTest, MalformedTensorsNameTheField) {
  v1::SpectrumRequest request;
  request.set_model("mix");
  request.set_timestep(20);
  v1::Tensor* x = request.mutable_x();
  x->add_shape(4);
  x->set_dtype(v1::FLOAT32);
  x->set_data(std::string(3 * sizeof(float), '\0'));  // 3 floats for 4
  auto short_data = client().Spectrum(request);
  EXPECT_EQ(short_data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(short_data.status().message().find("x.data"), std::string::npos) << short_data.status();
  x->clear_shape();
  x->add_shape(5);
  x->set_data(std::string(5 * sizeof(float), '\0'));
  auto wrong_shape = client().Spectrum(request);
  EXPECT_EQ(wrong_shape.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong_shape.status().message().find("x.shape"), std::string::npos);
  x->set_dtype(v1::DTYPE_UNSPECIFIED);
  EXPECT_NE(client().Spectrum(request).status().message().find("x.dtype"), std::string::npos);
  request.set_timestep(5000);
  x->set_dtype(v1::FLOAT32);
  auto bad_t = client().Spectrum(request);
  EXPECT_NE(bad_t.status().message().find("timestep"), std::string::npos) << bad_t.status();
  v1::AuditRequest audit;
  audit.set_model("mix");
  audit.add_conditions()->set_class_label(3);  // the model is unconditional
  auto bad_condition = client().SubmitAudit(audit);
  EXPECT_EQ(bad_condition.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_condition.status().message().find("conditions[0]"), std::string::npos);
  audit.clear_conditions();
  audit.mutable_sampling()->set_num_steps(5000);
  EXPECT_NE(client().SubmitAudit(audit).status().message().find("sampling.num_steps"),
            std::string::npos);
}

// A spectrum at a given point: x_t of the point component, exact κ = −1·σ²/(σ² + ᾱ·1e-6).
TEST_F(IntegrationTest, SpectrumAtAGivenPoint) {
  v1::SpectrumRequest request;
  request.set_model("mix");
  request.set_timestep(20);
  const float point[4] = {5.0f * 0.99686f, 0, 0, 0};  // ≈ √ᾱ_20 · μ
  v1::Tensor* x = request.mutable_x();
  x->add_shape(4);
  x->set_dtype(v1::FLOAT32);
  x->set_data(point, sizeof(point));
  auto spectrum = client().Spectrum(request);
  ASSERT_TRUE(spectrum.ok()) << spectrum.status();
  EXPECT_EQ(spectrum->eigenvalues_real_size(), 4);
  EXPECT_EQ(spectrum->summary().positive_eigenvalues(), 0);
  EXPECT_EQ(spectrum->summary().flat_directions(), 0);
  EXPECT_NEAR(spectrum->summary().max_kappa(), -1.0, 0.01);
}

TEST_F(IntegrationTest, AuditEndToEndThroughTheCli) {
  const CommandResult result = RunCommand(
      Cli("audit --model mix --samples 24 --seed 0 --json --fail-on partial 2>/dev/null"));
  ASSERT_EQ(result.exit_code, 3) << result.output;  // copies exist → gate trips
  nlohmann::json report = nlohmann::json::parse(result.output);
  EXPECT_EQ(report["model"], "mix");
  ASSERT_EQ(report["conditions"].size(), 1u);
  int copies = 0, novel = 0;
  for (const auto& sample : report["conditions"][0]["samples"]) {
    ASSERT_TRUE(sample.contains("nearest_ratio"));
    EXPECT_EQ(sample["t"], 20);
    const bool copy = sample["copy"].get<bool>() && sample["nearest_multiplicity"] > 1;
    if (copy) {
      ++copies;
      EXPECT_EQ(sample["verdict"], "MEMORIZED") << sample.dump();
      EXPECT_EQ(sample["flat_directions"], 0);
    } else {
      ++novel;
      EXPECT_EQ(sample["verdict"], "NOT_MEMORIZED") << sample.dump();
      EXPECT_TRUE(sample["width"].is_null() || sample["width"].get<double>() > 0.5);
    }
  }
  EXPECT_GE(copies, 2);
  EXPECT_GE(novel, 8);
  EXPECT_TRUE(report["timing"].contains("total_seconds"));
  // With early metrics: the condition keeps its counts and gains "early".
  const CommandResult early = RunCommand(
      Cli("audit --model mix --samples 4 --early-steps 1 --json --fail-on never 2>/dev/null"));
  ASSERT_EQ(early.exit_code, 0) << early.output;
  nlohmann::json early_report = nlohmann::json::parse(early.output);
  const auto& condition = early_report["conditions"][0];
  EXPECT_TRUE(condition.contains("memorized"));
  EXPECT_EQ(condition["samples"].size(), 4u);
  EXPECT_EQ(condition["early"]["hutchinson_trace"]["values"].size(), 4u);
  // The same audit without the gate: exit 0.
  EXPECT_EQ(RunCommand(Cli("audit --model mix --samples 4 --quiet --fail-on never > /dev/null"))
                .exit_code,
            0);
}

TEST_F(IntegrationTest, CliErrorsAreOneLineWithNonZeroExit) {
  CommandResult result = RunCommand(Cli("audit --model no-such-model 2>&1"));
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(result.output, "memaudit: NOT_FOUND: model \"no-such-model\" not found\n");
  EXPECT_EQ(RunCommand(Cli("audit 2>/dev/null")).exit_code, 2);  // --model missing
  result = RunCommand(std::string(MEMAUDIT_CLI_BINARY) +
                      " --server 127.0.0.1:1 --timeout 2 health 2>&1");
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(result.output.rfind("memaudit: UNAVAILABLE", 0), 0u) << result.output;
}

TEST_F(IntegrationTest, CancelStopsTheWork) {
  v1::AuditRequest request;
  request.set_model("slow");
  request.set_samples_per_condition(100000);
  auto job = client().SubmitAudit(request);
  ASSERT_TRUE(job.ok()) << job.status();
  // Cancel once it is really working (its first sample is done), then
  // follow it to its end.
  bool cancel_sent = false;
  auto ended = client().WatchAudit(job->id(), [&](const v1::AuditEvent& event) {
    if (event.has_sample() && !cancel_sent) cancel_sent = client().CancelAudit(job->id()).ok();
  });
  ASSERT_TRUE(cancel_sent);
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_EQ(ended->state(), v1::JOB_CANCELLED);
  // Negative check over a time window: no network call after the end.
  const double before = NetworkEvaluations();
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  EXPECT_EQ(NetworkEvaluations(), before) << "work went on after the job was cancelled";
  EXPECT_GT(before, 0);
}

TEST_F(IntegrationTest, ShortDeadlineIsDeadlineExceeded) {
  Client impatient(server_->target(), std::chrono::milliseconds(30));
  v1::SpectrumRequest request;
  request.set_model("slow");
  request.set_seed(7);
  request.mutable_sampling()->set_num_steps(1000);
  auto spectrum = impatient.Spectrum(request);
  EXPECT_EQ(spectrum.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(IntegrationTest, EightConcurrentAuditsCompleteOrAreRefused) {
  std::vector<std::thread> threads;
  std::vector<absl::StatusOr<v1::AuditJob>> submitted(8, absl::UnknownError("unset"));
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([this, i, &submitted] {
      v1::AuditRequest request;
      request.set_model(i % 2 ? "mix" : "slow");
      request.set_samples_per_condition(i % 2 ? 32 : 4);
      request.set_seed(i);
      submitted[i] = client().SubmitAudit(request);
    });
  }
  for (std::thread& t : threads) t.join();
  int accepted = 0;
  for (auto& job : submitted) {
    if (!job.ok()) {
      EXPECT_EQ(job.status().code(), absl::StatusCode::kResourceExhausted) << job.status();
      continue;
    }
    ++accepted;
    auto final_job = client().WatchAudit(job->id(), {});
    ASSERT_TRUE(final_job.ok()) << final_job.status();
    EXPECT_EQ(final_job->state(), v1::JOB_SUCCEEDED) << final_job->error();
  }
  EXPECT_GE(accepted, kMaxConcurrentJobs);
  EXPECT_LE(accepted, kMaxConcurrentJobs + kMaxQueuedJobs);
}

TEST_F(IntegrationTest, WatchStreamsProgressThenTheReport) {
  v1::AuditRequest request;
  request.set_model("mix");
  request.set_samples_per_condition(20);
  auto job = client().SubmitAudit(request);
  ASSERT_TRUE(job.ok());
  int progress = 0, samples = 0;
  auto final_job = client().WatchAudit(job->id(), [&](const v1::AuditEvent& event) {
    progress += event.has_progress();
    samples += event.has_sample();
  });
  ASSERT_TRUE(final_job.ok());
  EXPECT_EQ(samples, 20);
  EXPECT_GE(progress, 3);
  EXPECT_EQ(final_job->report().conditions(0).samples_size(), 20);
  // A finished job's watch yields the final event at once.
  auto again = client().WatchAudit(job->id(), {});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->state(), v1::JOB_SUCCEEDED);
}

TEST_F(IntegrationTest, UnloadAndReload) {
  ASSERT_TRUE(client().UnloadModel("mix").ok());
  v1::SpectrumRequest request;
  request.set_model("mix");
  request.set_seed(1);
  EXPECT_EQ(client().Spectrum(request).status().code(), absl::StatusCode::kUnavailable);
  auto loaded = client().LoadModel("mix");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->state(), v1::MODEL_READY);
  EXPECT_TRUE(client().Spectrum(request).ok());
}

TEST_F(IntegrationTest, SampleWritesImagesOrArrays) {
  const std::string out = scratch_->Join("samples.npy");
  CommandResult result = RunCommand(Cli("sample --model mix --count 3 --out " + out));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(fs::file_size(out), 128u + 3 * 4 * sizeof(float));  // npy header + data
  result =
      RunCommand(Cli("sample --model mix --count 3 --out " + scratch_->Join("x.png") + " 2>&1"));
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.output.find("image-shaped"), std::string::npos);
  const std::string plot = scratch_->Join("spectrum.svg");
  result = RunCommand(Cli("spectrum --model mix --seed 2 --plot " + plot));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("flat directions"), std::string::npos);
  std::ifstream svg(plot);
  std::string text((std::istreambuf_iterator<char>(svg)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text.rfind("<svg", 0), 0u);
  EXPECT_NE(text.find("polyline"), std::string::npos);
}

TEST_F(IntegrationTest, FailedReloadKeepsThePreviousVersionServing) {
  const std::string model_file = scratch_->Join("models/reloadable/model.pt");
  fs::copy_file(model_file, model_file + ".good");
  testing::WriteFile(model_file, "corrupted on disk");
  auto reload = client().LoadModel("reloadable");
  EXPECT_EQ(reload.status().code(), absl::StatusCode::kFailedPrecondition);
  auto info = client().GetModel("reloadable");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state(), v1::MODEL_READY);
  EXPECT_NE(info->last_error().find("model.pt"), std::string::npos);
  v1::SpectrumRequest request;
  request.set_model("reloadable");
  request.set_seed(3);
  EXPECT_TRUE(client().Spectrum(request).ok());
  fs::rename(model_file + ".good", model_file);
  EXPECT_TRUE(client().LoadModel("reloadable").ok());
  EXPECT_TRUE(client().GetModel("reloadable")->last_error().empty());
}

// The condition of class `label` (0 or 1) of the "emb" model, one-hot.
v1::Condition OneHot(int label) {
  v1::Condition condition;
  const float values[2] = {label == 0 ? 1.0f : 0.0f, label == 1 ? 1.0f : 0.0f};
  condition.mutable_embedding()->add_shape(2);
  condition.mutable_embedding()->set_dtype(v1::FLOAT32);
  condition.mutable_embedding()->set_data(values, sizeof(values));
  return condition;
}

// The width and height in a PNG file's IHDR; {0, 0} when it is not a PNG.
std::pair<uint32_t, uint32_t> PngSize(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() <= 24 || bytes.substr(1, 3) != "PNG") return {0, 0};
  auto be32 = [&](size_t at) {
    return (static_cast<uint32_t>(static_cast<uint8_t>(bytes[at])) << 24) |
           (static_cast<uint32_t>(static_cast<uint8_t>(bytes[at + 1])) << 16) |
           (static_cast<uint32_t>(static_cast<uint8_t>(bytes[at + 2])) << 8) |
           static_cast<uint32_t>(static_cast<uint8_t>(bytes[at + 3]));
  };
  return {be32(16), be32(20)};
}

TEST_F(IntegrationTest, ImageModelSamplesWritePngGrids) {
  const std::string png = scratch_->Join("grid.png");
  CommandResult result = RunCommand(Cli("sample --model img --count 6 --out " + png));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  // 3 columns × 2 rows of 4×4 tiles with 2-pixel gaps: 20 × 14.
  EXPECT_EQ(PngSize(png), std::make_pair(20u, 14u));
}

// The HTML page of an audit (memaudit audit --html, memaudit report): the
// verdict, and each copy's generation beside the training item it is
// nearest to, both inline images; the same page from the --json report.
TEST_F(IntegrationTest, HtmlReportShowsCopiesBesideTheirTrainingItems) {
  const std::string html = scratch_->Join("audit.html");
  const std::string json = scratch_->Join("audit.json");
  CommandResult audit =
      RunCommand(Cli("audit --model imgcopy --samples 12 --seed 40 --quiet "
                     "--fail-on never --json --html " +
                     html + " > " + json));
  ASSERT_EQ(audit.exit_code, 0) << audit.output;
  auto read = [](const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const nlohmann::json report = nlohmann::json::parse(read(json));
  const std::string page = read(html);
  ASSERT_GE(report["memorized_samples"].get<int64_t>(), 1) << "no copy among 12 samples";
  EXPECT_NE(page.find("id=\"model-verdict\"><span class=\"verdict " +
                      report["verdict"].get<std::string>()),
            std::string::npos);
  EXPECT_EQ(page.find("<script"), std::string::npos);
  const size_t row = page.find("<tr class=\"copy\">");
  ASSERT_NE(row, std::string::npos) << page.substr(0, 2000);
  const std::string copy = page.substr(row, page.find("</tr>", row) - row);
  const size_t generation = copy.find("<td class=\"generation\"><img");
  const size_t training = copy.find("<td class=\"training\"><img");
  ASSERT_NE(generation, std::string::npos) << copy;
  ASSERT_NE(training, std::string::npos) << copy;
  EXPECT_LT(generation, training);
  EXPECT_NE(page.find("<svg"), std::string::npos) << "the spectrum plot";

  const std::string again = scratch_->Join("again.html");
  CommandResult from_json = RunCommand(Cli("report --quiet --from " + json + " --html " + again));
  ASSERT_EQ(from_json.exit_code, 0) << from_json.output;
  EXPECT_EQ(read(again), page) << "the page is a function of the job and its seeds";

  CommandResult no_job =
      RunCommand(Cli("report --quiet --id audit-000000000000 --html " + again + " 2>&1"));
  EXPECT_NE(no_job.exit_code, 0);
  EXPECT_NE(no_job.output.find("audit-000000000000"), std::string::npos) << no_job.output;
}

TEST_F(IntegrationTest, MitigationOverRpcJudgesBeforeAndAfter) {
  v1::MitigateRequest request;
  request.set_model("mix");
  for (uint64_t seed = 0; seed < 10; ++seed) request.add_seeds(seed);
  request.set_max_steps(4);
  std::vector<v1::MitigatedSample> results;
  ASSERT_TRUE(client()
                  .Mitigate(request,
                            [&](const v1::MitigatedSample& result) {
                              results.push_back(result);
                              return absl::OkStatus();
                            })
                  .ok());
  ASSERT_EQ(results.size(), 10u);  // two batches, every seed once, in order

  // The "before" sample is the seed's own generation: what Sample returns.
  v1::SampleRequest sample;
  sample.set_model("mix");
  *sample.mutable_seeds() = request.seeds();
  auto sampled = client().Sample(sample);
  ASSERT_TRUE(sampled.ok()) << sampled.status();
  const std::vector<float> own = *TensorValues(sampled->samples());
  double sharpness_before = 0, sharpness_after = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    const v1::MitigatedSample& r = results[i];
    EXPECT_EQ(r.seed(), i);
    EXPECT_FALSE(r.conditional());  // unconditional model: |Hs|^2
    EXPECT_EQ(r.steps(), 4);
    // Four steps of 5% of |x_T| each on the sphere: it moved, by at most 20%.
    EXPECT_GT(r.initial_noise_change(), 0.0);
    EXPECT_LE(r.initial_noise_change(), 0.2 + 1e-9);
    const std::vector<float> before = *TensorValues(r.sample_before());
    const std::vector<float> after = *TensorValues(r.sample_after());
    ASSERT_EQ(before.size(), 4u);
    for (size_t j = 0; j < 4; ++j) EXPECT_NEAR(before[j], own[4 * i + j], 1e-5) << i;
    EXPECT_NE(before, after);
    EXPECT_EQ(TensorValues(r.initial_noise())->size(), 4u);
    // Verdicts and truth of both samples, as an audit reports them.
    EXPECT_NE(r.before().verdict(), v1::VERDICT_UNSPECIFIED);
    EXPECT_NE(r.after().verdict(), v1::VERDICT_UNSPECIFIED);
    EXPECT_TRUE(r.before().has_nearest());
    EXPECT_TRUE(r.after().has_nearest());
    EXPECT_EQ(r.before().seed(), r.seed());
    sharpness_before += r.sharpness_before();
    sharpness_after += r.sharpness_after();
  }
  EXPECT_LT(sharpness_after, sharpness_before);

  // The "before" report is the audit's report of the same seed.
  v1::AuditRequest audit;
  audit.set_model("mix");
  audit.set_seed(3);
  audit.set_samples_per_condition(1);
  auto job = client().SubmitAudit(audit);
  ASSERT_TRUE(job.ok()) << job.status();
  auto finished = client().WatchAudit(job->id(), [](const v1::AuditEvent&) {});
  ASSERT_TRUE(finished.ok()) << finished.status();
  const v1::SampleReport& audited = finished->report().conditions(0).samples(0);
  EXPECT_EQ(audited.verdict(), results[3].before().verdict());
  EXPECT_EQ(audited.nearest().index(), results[3].before().nearest().index());
  EXPECT_DOUBLE_EQ(audited.summary().max_kappa(), results[3].before().summary().max_kappa());

  // An embedding-conditioned model: Jeon's metric against the stored null.
  v1::MitigateRequest conditional;
  conditional.set_model("emb");
  conditional.add_seeds(1);
  conditional.add_seeds(2);
  *conditional.mutable_condition() = OneHot(0);
  conditional.set_max_steps(3);
  std::vector<v1::MitigatedSample> guarded;
  ASSERT_TRUE(client()
                  .Mitigate(conditional,
                            [&](const v1::MitigatedSample& result) {
                              guarded.push_back(result);
                              return absl::OkStatus();
                            })
                  .ok());
  ASSERT_EQ(guarded.size(), 2u);
  for (const v1::MitigatedSample& r : guarded) {
    EXPECT_TRUE(r.conditional());
    EXPECT_EQ(r.steps(), 3);
    EXPECT_LT(r.sharpness_after(), r.sharpness_before());
  }

  // Bad requests name the field; the server keeps serving.
  request.set_step_size(2);
  const absl::Status bad =
      client().Mitigate(request, [](const v1::MitigatedSample&) { return absl::OkStatus(); });
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("step_size"), std::string::npos) << bad;
  request.set_model("absent");
  EXPECT_EQ(client()
                .Mitigate(request, [](const v1::MitigatedSample&) { return absl::OkStatus(); })
                .code(),
            absl::StatusCode::kNotFound);
}

TEST_F(IntegrationTest, MitigateCliWritesBeforeAfterGrids) {
  // Image model: one row per seed, before | after.
  const std::string png = scratch_->Join("mitigated.png");
  CommandResult result =
      RunCommand(Cli("mitigate --model img --count 3 --guard-steps 2 --quiet --out " + png));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("memorized verdicts:"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("mean sharpness"), std::string::npos) << result.output;
  // 2 columns × 3 rows of 4×4 tiles with 2-pixel gaps: 14 × 20.
  EXPECT_EQ(PngSize(png), std::make_pair(14u, 20u));

  result = RunCommand(Cli("mitigate --model mix --count 2 --seed 5 --guard-steps 3 --json"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const nlohmann::json json = nlohmann::json::parse(result.output);
  EXPECT_EQ(json["metric"], "hessian_score");
  EXPECT_EQ(json["totals"]["seeds"], 2);
  ASSERT_EQ(json["seeds"].size(), 2u);
  EXPECT_EQ(json["seeds"][1]["seed"], 6);
  EXPECT_EQ(json["seeds"][1]["steps"], 3);
  EXPECT_TRUE(json["seeds"][0]["before"].contains("nearest_distance"));
  EXPECT_TRUE(json["totals"].contains("copies_after"));

  // A latent text-to-image model: by prompt, the grid shows decoded images
  // (3 × 32 × 32): 2 × 32 + 3 × 2 by 32 + 2 × 2.
  const std::string t2i_png = scratch_->Join("mitigated_t2i.png");
  result =
      RunCommand(Cli("mitigate --model t2i --prompt 'a red cube' --count 1 --guard-steps 1 "
                     "--quiet --out " +
                     t2i_png));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(PngSize(t2i_png), std::make_pair(70u, 36u));

  // Errors are one line with a non-zero exit.
  result = RunCommand(Cli("mitigate --model mix --step-size 0 2>&1"));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("step_size"), std::string::npos) << result.output;
  result = RunCommand(Cli("mitigate --model mix --out x.txt 2>&1"));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("--out"), std::string::npos) << result.output;
}

TEST_F(IntegrationTest, ArnoldiSpectrumMatchesDenseOverRpc) {
  v1::SpectrumRequest request;
  request.set_model("slow");
  request.set_seed(11);
  request.mutable_curvature()->set_method(v1::DENSE);
  auto dense = client().Spectrum(request);
  ASSERT_TRUE(dense.ok()) << dense.status();
  EXPECT_EQ(dense->method(), v1::DENSE);
  request.mutable_curvature()->set_method(v1::ARNOLDI);
  request.mutable_curvature()->set_num_eigenvalues(6);
  request.mutable_curvature()->set_arnoldi_tolerance(1e-8);
  auto arnoldi = client().Spectrum(request);
  ASSERT_TRUE(arnoldi.ok()) << arnoldi.status();
  EXPECT_EQ(arnoldi->method(), v1::ARNOLDI);
  EXPECT_GT(arnoldi->matvecs(), 0);
  EXPECT_TRUE(arnoldi->summary().partial());
  ASSERT_EQ(arnoldi->eigenvalues_real_size(), 6);
  const double scale = std::abs(dense->eigenvalues_real(dense->eigenvalues_real_size() - 1));
  for (int i = 0; i < 6; ++i) {
    EXPECT_NEAR(arnoldi->eigenvalues_real(i), dense->eigenvalues_real(i), 1e-4 * scale) << i;
  }
  EXPECT_NEAR(arnoldi->summary().max_kappa(), dense->summary().max_kappa(), 1e-4);
}

TEST_F(IntegrationTest, EarlyMetricsOverRpcAndCli) {
  v1::EarlyMetricsRequest request;
  request.set_model("mix");
  for (uint64_t seed : {1, 2, 3, 4}) request.add_seeds(seed);
  request.set_steps(2);
  auto metrics = client().EarlyMetrics(request);
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_FALSE(metrics->conditional());
  EXPECT_EQ(metrics->timesteps_size(), 2);
  EXPECT_EQ(metrics->hutchinson_trace().values_size(), 4);
  EXPECT_LT(metrics->hutchinson_trace().mean(), 0.0);  // log-concave near x_T
  const CommandResult result =
      RunCommand(Cli("early --model mix --count 4 --early-steps 1 --json"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  nlohmann::json json = nlohmann::json::parse(result.output);
  EXPECT_EQ(json["hutchinson_trace"]["values"].size(), 4u);
  request.set_steps(500);
  EXPECT_EQ(client().EarlyMetrics(request).status().code(), absl::StatusCode::kInvalidArgument);
  // The same metrics alongside a spectrum of that generation.
  v1::SpectrumRequest spectrum;
  spectrum.set_model("mix");
  spectrum.set_seed(3);
  spectrum.set_early_steps(2);
  auto with_early = client().Spectrum(spectrum);
  ASSERT_TRUE(with_early.ok()) << with_early.status();
  ASSERT_EQ(with_early->early().score_norm_squared().values_size(), 1);
  // Seed 3 is the third generation above; its noise depends only on its seed.
  EXPECT_NEAR(with_early->early().score_norm_squared().values(0),
              metrics->score_norm_squared().values(2),
              1e-5 * metrics->score_norm_squared().values(2));
}

// Calibrate on labelled classes, install the suggested policy, reload, and
// flag early on fresh seeds: verdicts follow the calibrated rule and match
// the labels.
TEST_F(IntegrationTest, CalibrateThenFlagEarly) {
  const CommandResult result = RunCommand(Cli(
      "calibrate --model calib --memorized 0,1,2,3,4,5,6,7,8,9 "
      "--not-memorized 10,11,12,13,14,15,16,17,18,19 --samples 32 --guidance 3 --early-steps 10 "
      "--json"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  nlohmann::json calibration = nlohmann::json::parse(result.output);
  std::map<std::string, nlohmann::json> by_name;
  for (const auto& metric : calibration["metrics"]) by_name[metric["name"]] = metric;
  for (const auto& [name, metric] : by_name) {
    std::cout << name << ": AUC " << metric["auc"] << ", TPR@1%FPR " << metric["tpr_at_1pct_fpr"]
              << ", threshold " << metric["threshold"] << "\n";
  }
  ASSERT_TRUE(by_name.count("width") && by_name.count("jeon_sharpness") &&
              by_name.count("wen_noise_difference"));
  EXPECT_GE(by_name["width"]["auc"].get<double>(), 0.95);
  const std::string policy = calibration["verdict_policy"];
  std::cout << policy;
  ASSERT_NE(policy.find("early_metric"), std::string::npos);

  // Install the policy and reload the model.
  const std::string config_path = scratch_->Join("models/calib/config.pbtxt");
  std::ofstream(config_path, std::ios::app) << policy;
  auto reloaded = client().LoadModel("calib");
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_FALSE(reloaded->config().verdict_policy().early_metric().empty());

  v1::AuditRequest request;
  request.set_model("calib");
  for (int64_t c = 0; c < 20; ++c) request.add_conditions()->set_class_label(c);
  request.set_samples_per_condition(32);
  request.set_seed(1000);  // fresh generations, not the calibration ones
  request.set_early_only(true);
  request.set_early_steps(10);
  request.mutable_sampling()->set_guidance_scale(3.0);
  auto job = client().SubmitAudit(request);
  ASSERT_TRUE(job.ok()) << job.status();
  auto done = client().WatchAudit(job->id(), {});
  ASSERT_TRUE(done.ok());
  ASSERT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->error();
  const v1::VerdictPolicy& installed = reloaded->config().verdict_policy();
  int correct = 0;
  for (int c = 0; c < 20; ++c) {
    const v1::ConditionReport& condition = done->report().conditions(c);
    ASSERT_TRUE(condition.has_early());
    EXPECT_EQ(condition.samples_size(), 0);  // no full generation, no spectra
    ASSERT_EQ(installed.early_metric(), "jeon_sharpness");
    const double value = condition.early().jeon_sharpness().mean();
    EXPECT_EQ(condition.verdict(),
              value >= installed.early_threshold() ? v1::MEMORIZED : v1::NOT_MEMORIZED);
    correct += (condition.verdict() == v1::MEMORIZED) == (c < 10);
  }
  // Every class centred at the origin, 32 generations per class and 10
  // early steps: the calibrated threshold (read on seeds 0..31) carries
  // over to seeds 1000..1031. With 4 generations or 1 step it did not
  // (measured: 10/20, every class flagged), since the seed-to-seed spread of
  // the mean sharpness then exceeds the gap between the two groups.
  EXPECT_EQ(correct, 20);
}

// Label-free flag-early audit: the model has no calibrated policy; the one
// memorized class stands out against the others, by Jeon's sharpness (the
// default for class labels) and by the anisotropy score when asked for
// (forward passes only: no Jeon value is computed).
TEST_F(IntegrationTest, LabelFreeEarlyFlags) {
  v1::AuditRequest request;
  request.set_model("outliers");
  for (int64_t c = 0; c < 12; ++c) request.add_conditions()->set_class_label(c);
  request.set_samples_per_condition(4);
  request.set_seed(3000);
  request.set_early_only(true);
  request.set_early_steps(1);
  for (const std::string metric : {"", "anisotropy"}) {
    request.set_label_free_metric(metric);
    auto job = client().SubmitAudit(request);
    ASSERT_TRUE(job.ok()) << job.status();
    auto done = client().WatchAudit(job->id(), {});
    ASSERT_TRUE(done.ok());
    ASSERT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->error();
    const std::string named = metric.empty() ? "jeon_sharpness" : metric;
    EXPECT_EQ(done->report().policy().early_rule(),
              absl::StrCat("label-free: ", named, " outlier z >= 3.5"));
    for (int c = 0; c < 12; ++c) {
      const v1::ConditionReport& condition = done->report().conditions(c);
      ASSERT_TRUE(condition.has_early_outlier_z()) << c;
      EXPECT_EQ(condition.verdict(), c == 0 ? v1::MEMORIZED : v1::NOT_MEMORIZED)
          << named << ", class " << c << ": z " << condition.early_outlier_z();
      EXPECT_EQ(condition.early().has_jeon_sharpness(), metric.empty()) << named;
      EXPECT_EQ(condition.early().anisotropy_alignment().values_size(), 4) << named;
    }
    EXPECT_EQ(done->report().verdict(), v1::MEMORIZED) << named;
  }
  // Too few conditions to compare: a clear error, not a guess.
  request.clear_conditions();
  request.add_conditions()->set_class_label(0);
  request.add_conditions()->set_class_label(1);
  auto refused = client().SubmitAudit(request);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("label-free"), std::string::npos) << refused.status();
}

TEST_F(IntegrationTest, EmbeddingConditionsEndToEnd) {
  v1::SpectrumRequest spectrum;
  spectrum.set_model("emb");
  spectrum.set_seed(2);
  *spectrum.mutable_condition() = OneHot(1);
  spectrum.mutable_curvature()->set_score_kind(v1::DIFFERENCE);  // needs the stored null
  auto difference = client().Spectrum(spectrum);
  ASSERT_TRUE(difference.ok()) << difference.status();
  EXPECT_EQ(difference->eigenvalues_real_size(), 4);

  v1::EarlyMetricsRequest early;
  early.set_model("emb");
  early.add_seeds(1);
  early.add_seeds(2);
  *early.mutable_condition() = OneHot(0);
  auto metrics = client().EarlyMetrics(early);
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_TRUE(metrics->conditional());
  EXPECT_EQ(metrics->jeon_sharpness().values_size(), 2);
  EXPECT_GT(metrics->wen_noise_difference().mean(), 0.0);

  v1::AuditRequest audit;
  audit.set_model("emb");
  *audit.add_conditions() = OneHot(0);
  *audit.add_conditions() = OneHot(1);
  audit.mutable_conditions(1)->mutable_embedding()->clear_shape();  // malformed
  EXPECT_NE(client().SubmitAudit(audit).status().message().find("conditions[1].embedding"),
            std::string::npos);
  *audit.mutable_conditions(1) = OneHot(1);
  audit.set_samples_per_condition(4);
  audit.set_early_steps(2);  // early metrics alongside the full audit
  auto job = client().SubmitAudit(audit);
  ASSERT_TRUE(job.ok()) << job.status();
  auto done = client().WatchAudit(job->id(), {});
  ASSERT_TRUE(done.ok());
  ASSERT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->error();
  ASSERT_EQ(done->report().conditions_size(), 2);
  EXPECT_EQ(done->report().conditions(0).label(), "embedding");
  EXPECT_EQ(done->report().conditions(0).samples_size(), 4);
  EXPECT_EQ(done->report().conditions(0).early().timesteps_size(), 2);

  // A prompt needs a text encoder, which this embedding model lacks.
  v1::Condition prompt;
  prompt.set_prompt("a photo of a cat");
  *spectrum.mutable_condition() = prompt;
  const absl::Status refused = client().Spectrum(spectrum).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.message(),
            "condition.prompt: the model has no text encoder (conditioning.text_encoder); pass "
            "the prompt's embedding instead");
}

// A text encoder whose output no gradient leaves: the audit still gives
// its verdicts and each prompt's deletion scores (forward passes only),
// and the report says why there is no gradient.
TEST_F(IntegrationTest, TokenGradientThatFailsLeavesTheAuditAndTheDeletions) {
  CommandResult result = RunCommand(
      Cli("audit --model t2i_detached --prompt 'a red cube' --prompt 'a blue ball' --samples 1 "
          "--json --fail-on never 2>/dev/null"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const nlohmann::json report = nlohmann::json::parse(result.output);
  ASSERT_EQ(report["conditions"].size(), 2u);
  for (const auto& condition : report["conditions"]) {
    EXPECT_EQ(condition["samples"].size(), 1u);
    EXPECT_NE(condition["verdict"], "UNKNOWN");
    const auto& attribution = condition["token_attribution"];
    EXPECT_FALSE(attribution.contains("unavailable")) << attribution.dump();
    const std::string why = attribution["gradient_unavailable"].get<std::string>();
    EXPECT_NE(why.find("does not require grad"), std::string::npos) << why;
    ASSERT_GE(attribution["tokens"].size(), 3u) << attribution.dump();
    double magnitude = 0;
    for (const auto& token : attribution["tokens"]) {
      EXPECT_EQ(token["gradient"], 0.0);
      magnitude += std::abs(token["score"].get<double>());
    }
    EXPECT_GT(magnitude, 0) << attribution.dump();
  }
  result =
      RunCommand(Cli("audit --model t2i_detached --prompt 'a red cube' --samples 1 --quiet "
                     "--fail-on never"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("strongest tokens: "), std::string::npos) << result.output;
}

// The tiny Stable-Diffusion-shaped pipeline that tools/export writes (UNet
// with cross-attention, CLIP-like text encoder, VAE decoder), served and
// audited by prompt through the client and the CLI.
TEST_F(IntegrationTest, TextToImageModelAuditedByPrompt) {
  const std::string prompts = scratch_->Join("prompts.jsonl");
  testing::WriteFile(prompts,
                     "{\"id\": \"horse\", \"prompt\": \"an astronaut riding a horse\"}\n"
                     "{\"id\": 7, \"prompt\": \"a handwritten seven, thick stroke\"}\n"
                     "\n"
                     "{\"prompt\": \"Ünïcödé café at night\", \"source\": \"ignored\"}\n");
  CommandResult result =
      RunCommand(Cli("audit --model t2i --prompts " + prompts +
                     " --prompt 'a red cube' --samples 2 --json --fail-on never 2>/dev/null"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const nlohmann::json report = nlohmann::json::parse(result.output);
  ASSERT_EQ(report["conditions"].size(), 4u);
  // --prompt first, then the file's prompts in order; ids become labels.
  const std::vector<std::string> labels = {"\"a red cube\"", "horse", "7",
                                           "\"Ünïcödé café at night\""};
  const std::vector<std::string> texts = {"a red cube", "an astronaut riding a horse",
                                          "a handwritten seven, thick stroke",
                                          "Ünïcödé café at night"};
  for (size_t i = 0; i < 4; ++i) {
    const auto& condition = report["conditions"][i];
    EXPECT_EQ(condition["label"], labels[i]);
    EXPECT_EQ(condition["condition"]["prompt"], texts[i]);
    ASSERT_EQ(condition["samples"].size(), 2u);
    for (const auto& sample : condition["samples"]) {
      EXPECT_EQ(sample["dimension"], 4 * 8 * 8);
      // reference.pt holds images: truth decodes each sample.
      ASSERT_TRUE(sample.contains("nearest_index")) << sample.dump();
      EXPECT_LT(sample["nearest_index"].get<int64_t>(), 12);
    }
  }
  EXPECT_EQ(report["conditions"][1]["condition"]["name"], "horse");
  // Each prompt's words with their deletion scores and, the exporter's
  // encoder having CLIP's token table, their gradients.
  for (size_t i = 0; i < 4; ++i) {
    const auto& attribution = report["conditions"][i]["token_attribution"];
    ASSERT_GE(attribution["tokens"].size(), 3u) << attribution.dump();
    EXPECT_EQ(attribution["samples"], 2);
    EXPECT_FALSE(attribution.contains("gradient_unavailable")) << attribution.dump();
    for (const auto& token : attribution["tokens"]) {
      EXPECT_GT(token["gradient"].get<double>(), 0) << attribution.dump();
    }
  }
  // The text report: one row per prompt, by label.
  result = RunCommand(
      Cli("audit --model t2i --prompts " + prompts + " --samples 1 --quiet --fail-on never"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("condition horse"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("condition 7 "), std::string::npos) << result.output;

  // The prompt gives what the embedding computed outside memaudit gives:
  // ids from the reference tokenizer, text_encoder.pt run by Python's torch.
  const std::string embedding_file = scratch_->Join("seven.pt");
  testing::RunCommand(std::string(MEMAUDIT_PYTHON) + " " + MEMAUDIT_FIXTURES +
                      "/encode_prompt.py " + scratch_->Join("models/t2i") +
                      " 'a handwritten seven, thick stroke' " + embedding_file);
  auto embedding = LoadTensorFile(embedding_file);
  ASSERT_TRUE(embedding.ok()) << embedding.status();
  v1::SampleRequest by_prompt;
  by_prompt.set_model("t2i");
  by_prompt.add_seeds(3);
  by_prompt.add_seeds(4);
  by_prompt.mutable_sampling()->set_num_steps(10);
  by_prompt.mutable_sampling()->set_guidance_scale(4);
  by_prompt.mutable_condition()->set_prompt("a handwritten seven, thick stroke");
  v1::SampleRequest by_embedding = by_prompt;
  v1::Tensor* tensor = by_embedding.mutable_condition()->mutable_embedding();
  const at::Tensor values = embedding->to(at::kFloat).contiguous();
  for (int64_t dim : values.sizes()) tensor->add_shape(dim);
  tensor->set_dtype(v1::FLOAT32);
  tensor->set_data(values.data_ptr<float>(), values.numel() * sizeof(float));
  auto from_prompt = client().Sample(by_prompt);
  ASSERT_TRUE(from_prompt.ok()) << from_prompt.status();
  auto from_embedding = client().Sample(by_embedding);
  ASSERT_TRUE(from_embedding.ok()) << from_embedding.status();
  auto a = client::TensorValues(from_prompt->samples());
  auto b = client::TensorValues(from_embedding->samples());
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->size(), 2u * 256);
  for (size_t i = 0; i < a->size(); ++i) ASSERT_NEAR((*a)[i], (*b)[i], 1e-4) << i;

  // PNGs of a latent model show the decoded images (32×32, not 8×8).
  const std::string png = scratch_->Join("t2i.png");
  result = RunCommand(
      Cli("sample --model t2i --prompt 'a red cube' --count 2 --steps 5 --out " + png + " 2>&1"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  std::ifstream in(png, std::ios::binary);
  std::array<unsigned char, 24> header{};
  in.read(reinterpret_cast<char*>(header.data()), header.size());
  const uint32_t width = header[16] << 24 | header[17] << 16 | header[18] << 8 | header[19];
  const uint32_t height = header[20] << 24 | header[21] << 16 | header[22] << 8 | header[23];
  EXPECT_GE(static_cast<int64_t>(width) * height, 2 * 32 * 32);

  // Calibration on labelled prompt files.
  const std::string memorized = scratch_->Join("memorized.txt");
  const std::string generic = scratch_->Join("generic.txt");
  testing::WriteFile(memorized, "a red cube\r\nan astronaut riding a horse\n");
  testing::WriteFile(generic, "a blue sphere\n\na green cone\n");
  result = RunCommand(Cli("calibrate --model t2i --memorized-prompts " + memorized +
                          " --not-memorized-prompts " + generic + " --samples 1 --steps 5 --json"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const nlohmann::json calibration = nlohmann::json::parse(result.output);
  bool wen = false;
  for (const auto& metric : calibration["metrics"]) {
    if (metric["name"] != "wen_noise_difference") continue;
    wen = true;
    EXPECT_EQ(metric["memorized_scores"].size(), 2u);
    EXPECT_EQ(metric["not_memorized_scores"].size(), 2u);
  }
  EXPECT_TRUE(wen) << result.output;
  // --early-only: the same early scores (same seeds), no spectra, and a
  // policy that sets only the early rule.
  result = RunCommand(Cli("calibrate --model t2i --memorized-prompts " + memorized +
                          " --not-memorized-prompts " + generic +
                          " --samples 1 --steps 5 --early-only --json"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const nlohmann::json early_only = nlohmann::json::parse(result.output);
  std::set<std::string> names;
  for (const auto& metric : early_only["metrics"]) {
    names.insert(metric["name"].get<std::string>());
    for (const auto& full : calibration["metrics"]) {
      if (full["name"] == metric["name"]) {
        EXPECT_EQ(full["memorized_scores"], metric["memorized_scores"]) << metric["name"];
      }
    }
  }
  EXPECT_TRUE(names.count("wen_noise_difference")) << result.output;
  EXPECT_FALSE(names.count("width")) << result.output;
  EXPECT_FALSE(names.count("positive_eigenvalues")) << result.output;
  // The suggested early rule is a metric with a finite threshold (JSON null
  // is an infinite one: no cut keeps FPR <= 1%), or none, said so: this
  // model's random weights need not separate two prompts from two.
  const std::string policy = early_only["verdict_policy"].get<std::string>();
  bool suggestible = false;
  for (const auto& metric : early_only["metrics"]) {
    suggestible |= metric["higher_is_memorized"].get<bool>() && metric["name"] != "anisotropy" &&
                   metric["threshold"].is_number();
  }
  EXPECT_EQ(policy.find("early_metric") != std::string::npos, suggestible) << policy;
  EXPECT_EQ(policy.find("no early metric") != std::string::npos, !suggestible) << policy;
  EXPECT_EQ(policy.find("memorized_width"), std::string::npos) << policy;

  // Bad prompt input: named, nothing sent.
  testing::WriteFile(scratch_->Join("bad.jsonl"), "{\"prompt\": \"ok\"}\n{\"id\": 1}\n");
  result = RunCommand(Cli("audit --model t2i --prompts " + scratch_->Join("bad.jsonl") + " 2>&1"));
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.output.find("bad.jsonl:2: needs a string \"prompt\""), std::string::npos)
      << result.output;
  result = RunCommand(Cli("audit --model t2i --prompts " + scratch_->Join("none.txt") + " 2>&1"));
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.output.find("cannot read the prompt file"), std::string::npos) << result.output;
  result = RunCommand(Cli("audit --model mix --prompt 'a cat' 2>&1"));
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.output.find("conditions[0].prompt: the model has no text encoder"),
            std::string::npos)
      << result.output;
}

TEST_F(IntegrationTest, MetricsScrapePassesPromtool) {
  // What the families below count: a failed call, a spectrum, an audit.
  EXPECT_EQ(client().GetModel("no-such-model").status().code(), absl::StatusCode::kNotFound);
  v1::AuditRequest request;
  request.set_model("mix");
  request.set_samples_per_condition(2);
  auto job = client().SubmitAudit(request);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(client().WatchAudit(job->id(), {}).ok());
  const std::string scrape = Scrape();
  for (const char* family :
       {"memaudit_rpc_duration_seconds_bucket", "memaudit_audits_total", "memaudit_jobs{",
        "memaudit_network_evaluations_total", "memaudit_spectrum_duration_seconds_bucket",
        "memaudit_model_load_duration_seconds", "memaudit_model_ready", "memaudit_build_info",
        "memaudit_finished_jobs ", "memaudit_finished_jobs_bytes ", "memaudit_jobs_evicted_total ",
        "memaudit_device_memory_bytes", "process_resident_memory_bytes",
        "process_cpu_seconds_total"}) {
    EXPECT_NE(scrape.find(family), std::string::npos) << family;
  }
  EXPECT_NE(scrape.find("code=\"NOT_FOUND\""), std::string::npos);
  EXPECT_EQ(scrape.find("audit-"), std::string::npos) << "job ids must not be labels";
  const std::string file = scratch_->Join("scrape.txt");
  std::ofstream(file) << scrape;
  const CommandResult check = RunCommand("promtool check metrics < " + file + " 2>&1");
  EXPECT_EQ(check.exit_code, 0) << check.output;
}

// Fields this server does not know are not kept with the job (they were:
// 3 × 100 MB of them grew the server by 0.64 GB and broke ListAudits).
TEST_F(IntegrationTest, UnknownFieldsAreNotKeptWithTheJob) {
  v1::AuditRequest request;
  request.set_model("mix");
  request.set_samples_per_condition(1);
  std::string wire = request.SerializeAsString();
  // Field 1000, length-delimited, 1 MiB: unknown to memaudit.v1.AuditRequest.
  const std::string payload(1 << 20, 'x');
  wire += std::string("\xc2\x3e", 2);  // tag (1000 << 3) | 2 as a varint
  uint64_t length = payload.size();
  while (length >= 0x80) {
    wire += static_cast<char>((length & 0x7f) | 0x80);
    length >>= 7;
  }
  wire += static_cast<char>(length);
  wire += payload;
  v1::AuditRequest with_unknown;
  ASSERT_TRUE(with_unknown.ParseFromString(wire));
  ASSERT_FALSE(with_unknown.GetReflection()->GetUnknownFields(with_unknown).empty());
  auto job = client().SubmitAudit(with_unknown);
  ASSERT_TRUE(job.ok()) << job.status();
  auto stored = client().GetAudit(job->id());
  ASSERT_TRUE(stored.ok());
  EXPECT_TRUE(stored->request().GetReflection()->GetUnknownFields(stored->request()).empty());
  EXPECT_LT(stored->ByteSizeLong(), 64u << 10);
  ASSERT_TRUE(client().WatchAudit(job->id(), {}).ok());
}

// Each WatchAudit stream holds a server thread: beyond --max_watch_streams
// a watch is refused, and the others go on.
TEST_F(IntegrationTest, WatchStreamsAreCapped) {
  v1::AuditRequest request;
  request.set_model("slow");
  request.set_samples_per_condition(100000);
  auto job = client().SubmitAudit(request);
  ASSERT_TRUE(job.ok()) << job.status();
  std::atomic<int> first_events{0};
  std::vector<std::thread> watchers;
  std::vector<absl::StatusOr<v1::AuditJob>> ends(kMaxWatchStreams, absl::UnknownError("unset"));
  for (int i = 0; i < kMaxWatchStreams; ++i) {
    watchers.emplace_back([&, i] {
      bool counted = false;
      ends[i] = client().WatchAudit(job->id(), [&](const v1::AuditEvent&) {
        if (!counted) ++first_events;
        counted = true;
      });
    });
  }
  // Every watcher has its stream once it has seen an event.
  while (first_events.load() < kMaxWatchStreams) std::this_thread::yield();
  auto refused = client().WatchAudit(job->id(), {});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_NE(refused.status().message().find("--max_watch_streams"), std::string::npos);
  ASSERT_TRUE(client().CancelAudit(job->id()).ok());
  for (std::thread& t : watchers) t.join();
  for (const auto& end : ends) {
    ASSERT_TRUE(end.ok()) << end.status();
    EXPECT_EQ(end->state(), v1::JOB_CANCELLED);
  }
  // The slots are free again.
  EXPECT_TRUE(client().WatchAudit(job->id(), {}).ok());
}

// Idle connections to the metrics port do not starve a scrape (16 of them
// used to delay it 8.7 s; Prometheus gives up after 10 s).
TEST_F(IntegrationTest, ScrapeIsAnsweredWithManyIdleConnections) {
  std::vector<int> idle;
  for (int i = 0; i < 100; ++i) {
    const int sock = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(sock, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(server_->metrics_port()));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(sock, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    idle.push_back(sock);
  }
  const auto start = std::chrono::steady_clock::now();
  const std::string scrape = Scrape();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (int sock : idle) close(sock);
  EXPECT_NE(scrape.find("memaudit_build_info"), std::string::npos);
  std::cout << "scrape with 100 idle connections: " << seconds << " s\n";
  // Well inside Prometheus' 10 s scrape timeout even on a loaded machine
  // (a quiet one answers in milliseconds).
  EXPECT_LT(seconds, 5.0);
}

// Configuration errors end the start with the reason and a non-zero exit,
// instead of a server that serves nothing.
TEST_F(IntegrationTest, BadStartupConfigurationFailsLoudly) {
  const std::string server =
      std::string(MEMAUDIT_SERVER_BINARY) + " --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0";
  CommandResult missing =
      RunCommand(server + " --model_repository=" + scratch_->Join("no-such-dir") + " 2>&1");
  EXPECT_EQ(missing.exit_code, 1) << missing.output;
  EXPECT_NE(missing.output.find("--model_repository"), std::string::npos) << missing.output;
  EXPECT_NE(missing.output.find("is not a directory"), std::string::npos) << missing.output;
  CommandResult device = RunCommand(server + " --model_repository=" + scratch_->Join("models") +
                                    " --device=banana 2>&1");
  EXPECT_EQ(device.exit_code, 1) << device.output;
  EXPECT_NE(device.output.find("--device"), std::string::npos) << device.output;
  // Flags that do not parse or are out of range: usage errors (exit 2)
  // naming the flag, never a start with a nonsense setting.
  for (const std::string flag : {"--threads=-4", "--shutdown_grace_seconds=-5",
                                 "--max_concurrent_jobs=0", "--threads=abc", "--bogus=1"}) {
    CommandResult bad = RunCommand(server + " --model_repository=" + scratch_->Join("models") +
                                   " " + flag + " 2>&1");
    EXPECT_EQ(bad.exit_code, 2) << flag << ": " << bad.output;
    const std::string name = flag.substr(0, flag.find('='));
    EXPECT_NE(bad.output.find(name), std::string::npos) << flag << ": " << bad.output;
  }
}

// SIGTERM with an audit running: the server cancels it after the grace
// period and exits 0. A server of its own, so the suite's server stays up.
TEST_F(IntegrationTest, GracefulShutdownOnSigterm) {
  testing::ScratchDir own;
  fs::create_directories(own.Join("models"));
  fs::copy(scratch_->Join("models/slow"), own.Join("models/slow"), fs::copy_options::recursive);
  ServerProcess server(MEMAUDIT_SERVER_BINARY, own.Join("models"), own.path(), ServerFlags());
  ASSERT_GT(server.grpc_port(), 0) << server.Log();
  ASSERT_TRUE(WaitUntilServing(server)) << server.Log();
  Client c(server.target(), std::chrono::seconds(60));
  v1::AuditRequest request;
  request.set_model("slow");
  request.set_samples_per_condition(100000);
  auto job = c.SubmitAudit(request);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(server.Terminate(20), 0) << server.Log();
  EXPECT_NE(server.Log().find("stopped"), std::string::npos);
}

// Models whose forward never returns (LibTorch calls cannot be
// interrupted): "stuck" at its load probe, "wedge" on any input but the
// probe's zeros, so that an audit of it never ends. The server turns
// SERVING after the load timeout, the other model serves throughout (and
// loads while a stuck load runs), per-model health tells which model is
// usable, and SIGTERM ends the process through the watchdog.
TEST_F(IntegrationTest, ModelsThatNeverReturnDoNotHoldTheServer) {
  testing::ScratchDir own;
  fs::create_directories(own.Join("models"));
  fs::copy(scratch_->Join("models/mix"), own.Join("models/mix"), fs::copy_options::recursive);
  ASSERT_TRUE(testing::WriteScriptedModel(own.Join("models"), testing::MixtureConfig("stuck", 4),
                                          testing::kForwardThatNeverReturns)
                  .ok());
  ASSERT_TRUE(testing::WriteScriptedModel(own.Join("models"), testing::MixtureConfig("wedge", 4),
                                          "def forward(self, x: Tensor, t: Tensor) -> Tensor:\n"
                                          "    i = 0\n"
                                          "    while bool(x.abs().sum() > 0) and i >= 0:\n"
                                          "        i = i + 1\n"
                                          "    return x\n")
                  .ok());
  ServerProcess server(MEMAUDIT_SERVER_BINARY, own.Join("models"), own.path(),
                       {"--model_load_timeout_seconds=2", "--shutdown_grace_seconds=1",
                        "--shutdown_watchdog_seconds=2"});
  ASSERT_GT(server.grpc_port(), 0) << server.Log();
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitUntilServing(server)) << server.Log();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 30);
  Client c(server.target(), std::chrono::seconds(60));
  EXPECT_EQ(*c.Health("model/mix"), "SERVING");
  EXPECT_EQ(*c.Health("model/wedge"), "SERVING");
  EXPECT_EQ(*c.Health("model/stuck"), "NOT_SERVING");
  auto stuck = c.GetModel("stuck");
  ASSERT_TRUE(stuck.ok());
  EXPECT_EQ(stuck->state(), v1::MODEL_FAILED);
  EXPECT_NE(stuck->last_error().find("did not finish"), std::string::npos) << stuck->last_error();

  // Loading it again while its abandoned load still spins is refused at
  // once (each retry used to leave one more thread spinning); the other
  // model loads and answers.
  auto again = c.LoadModel("stuck");
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnavailable) << again.status();
  EXPECT_NE(again.status().message().find("is still running"), std::string::npos) << again.status();
  auto reloaded = c.LoadModel("mix");
  EXPECT_TRUE(reloaded.ok()) << reloaded.status();

  // An audit of "wedge" never ends; other work goes on.
  v1::AuditRequest request;
  request.set_model("wedge");
  request.set_samples_per_condition(1);
  auto job = c.SubmitAudit(request);
  ASSERT_TRUE(job.ok()) << job.status();
  v1::SpectrumRequest spectrum;
  spectrum.set_model("mix");
  spectrum.set_seed(1);
  auto measured = c.Spectrum(spectrum);
  EXPECT_TRUE(measured.ok()) << measured.status();
  EXPECT_EQ(c.GetAudit(job->id())->state(), v1::JOB_RUNNING);

  // Shutdown cannot finish (the audit's forward never returns): the
  // watchdog ends the process 1 + 2 s after SIGTERM.
  EXPECT_EQ(server.Terminate(30), 3) << server.Log();
  EXPECT_NE(server.Log().find("has not finished"), std::string::npos) << server.Log();
}

// A request the server could accept by its field limits but not hold in
// memory is refused up front, with the numbers (it used to be accepted:
// the field limits allowed one request of about 268 GB).
TEST_F(IntegrationTest, RequestsAboveTheMemoryLimitAreRefusedWithTheNumbers) {
  v1::AuditRequest request;
  request.set_model("slow");
  request.set_early_steps(1);
  request.set_samples_per_condition(100000);
  auto refused = client().SubmitAudit(request);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_NE(refused.status().message().find("--max_request_memory_mib 256"), std::string::npos)
      << refused.status();
  EXPECT_NE(refused.status().message().find("early-metric states"), std::string::npos);
  request.set_samples_per_condition(100);
  auto accepted = client().SubmitAudit(request);
  ASSERT_TRUE(accepted.ok()) << accepted.status();
  EXPECT_TRUE(client().CancelAudit(accepted->id()).ok());
}

// Requests whose strings are not UTF-8 from a raw client: INVALID_ARGUMENT
// naming the field (proto/request_parsing.h), and libprotobuf's log line
// for each let through once per 10 s.
TEST_F(IntegrationTest, InvalidUtf8RequestsDoNotFloodTheLog) {
  auto count_lines = [] {
    const std::string log = server_->Log();
    size_t count = 0;
    for (size_t at = log.find("invalid UTF-8"); at != std::string::npos;
         at = log.find("invalid UTF-8", at + 1)) {
      ++count;
    }
    return count;
  };
  const size_t before = count_lines();
  // The raw stub: memaudit's client refuses such text before sending it.
  auto channel = grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials());
  auto stub = v1::ModelService::NewStub(channel);
  v1::GetModelRequest request;
  request.set_name("\xff\xfe model");
  for (int i = 0; i < 50; ++i) {
    grpc::ClientContext context;
    v1::ModelInfo info;
    // Was INTERNAL with an empty message: protobuf refuses the text before
    // any handler runs.
    const grpc::Status status = stub->GetModel(&context, request, &info);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(status.error_message(),
              "name: not valid UTF-8 (text fields must be; memaudit.v1.GetModelRequest)");
  }
  // A nested field is named by its path.
  auto audits = v1::AuditService::NewStub(channel);
  v1::AuditRequest audit;
  audit.set_model("mix");
  audit.add_conditions()->set_class_label(1);
  audit.add_conditions()->set_prompt("caf\xc3");
  grpc::ClientContext context;
  v1::AuditJob job;
  const grpc::Status nested = audits->SubmitAudit(&context, audit, &job);
  EXPECT_EQ(nested.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(nested.error_message(),
            "conditions[1].prompt: not valid UTF-8 (text fields must be; "
            "memaudit.v1.AuditRequest)");
  EXPECT_GE(count_lines() - before, 1u) << "the server logged none: did the requests arrive?";
  EXPECT_LE(count_lines() - before, 1u) << server_->Log();
  auto health = client().Health();
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(*health, "SERVING");
}

// After a burst of work the suite's server still serves.
TEST_F(IntegrationTest, StillHealthyAfterConcurrentWork) {
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([this, i] {
      v1::SpectrumRequest request;
      request.set_model("mix");
      request.set_seed(i);
      EXPECT_TRUE(client().Spectrum(request).ok());
    });
  }
  for (std::thread& t : threads) t.join();
  auto health = client().Health();
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(*health, "SERVING");
}

}  // namespace
}  // namespace memaudit
