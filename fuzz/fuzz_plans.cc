// Request bytes → the planners (plans.h) on loaded exact mixture models.
// The first byte picks the planner (byte % 5) and the model (byte / 5 % 4:
// class-conditional, class-conditional with a calibrated policy,
// embedding-conditioned, unconditional); the rest is the serialized
// request. Planners run as the handlers run them (PlanNoThrow); every
// input must give a Status other than INTERNAL, and an OK plan must be in
// the ranges plans.h promises.
#include <ATen/ATen.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/runtime/tensor_file.h"
#include "fuzz/fuzz_check.h"
#include "server/plans.h"
#include "tests/server_fixture.h"
#include "tools/toy/gaussian_mixture.h"
#include "tools/toy/model_directory.h"

namespace memaudit::server {
namespace {

constexpr const char* kModels[] = {"classes", "calibrated", "emb", "plain"};
constexpr int kNumModels = 4;
constexpr int kNumPlanners = 5;

// The repository (removed at exit) and the registry over it.
std::unique_ptr<testing::ServerFixture> fixture;
std::unique_ptr<ModelRegistry> registry;
std::shared_ptr<const LoadedModel> models[kNumModels];

void Die(const std::string& what) {
  std::fprintf(stderr, "fuzz_plans: %s\n", what.c_str());
  std::abort();
}

// ServerFixture's "classes" and "calibrated", plus an embedding-conditioned
// model with a null condition and an unconditional one.
void LoadModels() {
  QuietProtobufLogs();
  fixture = std::make_unique<testing::ServerFixture>();
  const std::string& repository = fixture->repository();
  const int64_t dim = testing::kFixtureDim;
  const toy::GaussianMixture mixture = toy::RandomGaussianMixture(dim, 4, /*seed=*/6, 2);
  v1::ModelConfig emb_config = testing::MixtureConfig("emb", dim);
  emb_config.mutable_conditioning()->set_kind(v1::Conditioning::EMBEDDING);
  emb_config.mutable_conditioning()->add_embedding_shape(2);
  absl::StatusOr<NoiseSchedule> schedule = NoiseSchedule::Create(emb_config.noise_schedule());
  if (!schedule.ok()) Die(schedule.status().ToString());
  absl::StatusOr<torch::jit::Module> emb = toy::BuildGaussianMixtureModule(
      mixture, *schedule, v1::EPSILON, 2, toy::MixtureConditioning::kEmbedding);
  if (!emb.ok()) Die(emb.status().ToString());
  absl::Status written = toy::WriteModelDirectory(repository, emb_config, *emb);
  if (written.ok()) {
    written = SaveTensorFile(repository + "/emb/null_condition.pt", at::zeros({2}));
  }
  if (written.ok()) {
    written = testing::WriteMixtureDirectory(repository, "plain",
                                             toy::RandomGaussianMixture(dim, 3, /*seed=*/7),
                                             v1::NoiseSchedule::COSINE, v1::V_PREDICTION);
  }
  if (!written.ok()) Die(written.ToString());
  registry = fixture->NewRegistry();
  for (int i = 0; i < kNumModels; ++i) {
    if (auto info = registry->Load(kModels[i]); !info.ok()) Die(info.status().ToString());
    auto model = registry->Get(kModels[i]);
    if (!model.ok()) Die(model.status().ToString());
    models[i] = *model;
  }
}

// Invariants of every OK plan.
void CheckSampler(const SamplerOptions& sampler, const LoadedModel& model) {
  const int64_t train_steps = model.denoiser->schedule().num_train_timesteps();
  FUZZ_CHECK(sampler.num_steps >= 1 && sampler.num_steps <= train_steps, "num_steps %lld",
             static_cast<long long>(sampler.num_steps));
  FUZZ_CHECK(sampler.steps_offset >= 0 && sampler.steps_offset < train_steps, "steps_offset %lld",
             static_cast<long long>(sampler.steps_offset));
  FUZZ_CHECK(sampler.eta >= 0 && sampler.eta <= 1, "eta %g", sampler.eta);
  FUZZ_CHECK(std::isfinite(sampler.guidance) && std::abs(sampler.guidance) <= 1000, "guidance %g",
             sampler.guidance);
  FUZZ_CHECK(LeadingTimesteps(train_steps, sampler.num_steps, sampler.steps_offset).ok(),
             "sampling timesteps out of range");
}

void CheckCurvature(const SampleCurvatureOptions& curvature, const LoadedModel& model) {
  CheckSampler(curvature.sampler, model);
  const int64_t train_steps = model.denoiser->schedule().num_train_timesteps();
  for (int64_t t : curvature.timesteps) {
    FUZZ_CHECK(t >= 0 && t < train_steps, "timestep %lld", static_cast<long long>(t));
  }
  FUZZ_CHECK(curvature.jacobian.chunk_rows >= 1 && curvature.jacobian.chunk_rows <= (1 << 16),
             "chunk_rows");
  FUZZ_CHECK(curvature.arnoldi.num_eigenvalues >= 1 && curvature.arnoldi.num_eigenvalues <= 4096,
             "num_eigenvalues");
  FUZZ_CHECK(curvature.arnoldi.max_restarts >= 1 && curvature.arnoldi.max_restarts <= 100000,
             "max_restarts");
  FUZZ_CHECK(curvature.arnoldi.tolerance > 0 && curvature.arnoldi.tolerance < 1, "tolerance");
  FUZZ_CHECK(curvature.spectrum.positive_tolerance > 0 && curvature.spectrum.positive_tolerance < 1,
             "positive_tolerance");
}

void CheckEarly(const EarlyMetricOptions& early, const LoadedModel& model) {
  CheckSampler(early.sampler, model);
  FUZZ_CHECK(early.steps >= 1 && early.steps <= early.sampler.num_steps, "early steps %lld",
             static_cast<long long>(early.steps));
  FUZZ_CHECK(early.hutchinson_probes >= 1 && early.hutchinson_probes <= kMaxHutchinsonProbes,
             "hutchinson_probes");
}

void CheckCondition(const ConditionPlan& condition, const LoadedModel& model) {
  const v1::Conditioning& conditioning = model.network->config().conditioning();
  switch (conditioning.kind()) {
    case v1::Conditioning::CLASS_LABEL: {
      FUZZ_CHECK(condition.row.defined() && condition.row.dim() == 1 && condition.row.size(0) == 1,
                 "class row");
      const int64_t label = condition.row.item<int64_t>();
      FUZZ_CHECK(label >= 0 && label <= conditioning.num_classes(), "label %lld",
                 static_cast<long long>(label));
      break;
    }
    case v1::Conditioning::EMBEDDING:
      FUZZ_CHECK(condition.row.defined() && condition.row.dim() == 2 &&
                     condition.row.size(0) == 1 && condition.row.size(1) == 2 &&
                     condition.row.scalar_type() == model.network->dtype(),
                 "embedding row");
      FUZZ_CHECK(at::isfinite(condition.row).all().item<bool>(), "embedding not finite");
      break;
    default:
      FUZZ_CHECK(!condition.row.defined(), "unconditional row");
  }
  FUZZ_CHECK(!condition.label.empty(), "empty label");
}

void CheckSeeds(const std::vector<uint64_t>& seeds) {
  FUZZ_CHECK(!seeds.empty() && seeds.size() <= static_cast<size_t>(kMaxSeedsPerRequest),
             "%zu seeds", seeds.size());
}

// Plans `data` as a `Request` with `planner`; checks OK plans with `check`.
template <typename Request, typename Planner, typename Check>
void Run(const uint8_t* data, size_t size, const std::shared_ptr<const LoadedModel>& model,
         Planner planner, Check check) {
  Request request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return;
  // A stop check that never stops: the planners ask it between prompts, as
  // the server's does between its deadline checks.
  const StopCheck keep_going = [] { return absl::OkStatus(); };
  auto plan = PlanNoThrow([&] { return planner(request, model, keep_going); });
  FUZZ_LOG_STATUS(plan.status());
  if (!plan.ok()) {
    FUZZ_CHECK(plan.status().code() != absl::StatusCode::kInternal &&
                   plan.status().code() != absl::StatusCode::kUnknown,
               "%s", plan.status().ToString().c_str());
    return;
  }
  FUZZ_CHECK(plan->model == model, "plan bound to another model");
  check(*plan, *model);
}

}  // namespace
}  // namespace memaudit::server

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  memaudit::server::LoadModels();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace memaudit::server;
  namespace v1 = memaudit::v1;
  if (size == 0) return 0;
  const std::shared_ptr<const LoadedModel>& model = models[data[0] / kNumPlanners % kNumModels];
  const uint8_t* bytes = data + 1;
  const size_t length = size - 1;
  switch (data[0] % kNumPlanners) {
    case 0:
      Run<v1::AuditRequest>(
          bytes, length, model, PlanAudit, [](const AuditPlan& plan, const LoadedModel& model) {
            FUZZ_CHECK(!plan.conditions.empty() && plan.conditions.size() <= kMaxConditions,
                       "%zu conditions", plan.conditions.size());
            for (const auto& c : plan.conditions) CheckCondition(c, model);
            FUZZ_CHECK(plan.samples_per_condition >= 1 &&
                           plan.samples_per_condition <= kMaxSamplesPerCondition,
                       "samples_per_condition");
            CheckCurvature(plan.curvature, model);
            if (plan.mode != AuditPlan::Mode::kFull) {
              FUZZ_CHECK(plan.early.has_value(), "early mode without options");
            }
            if (plan.early.has_value()) CheckEarly(*plan.early, model);
          });
      break;
    case 1:
      Run<v1::CalibrationRequest>(
          bytes, length, model, PlanCalibration,
          [](const CalibrationPlan& plan, const LoadedModel& model) {
            FUZZ_CHECK(plan.memorized.size() >= 2 && plan.not_memorized.size() >= 2 &&
                           plan.memorized.size() + plan.not_memorized.size() <= kMaxConditions,
                       "conditions");
            for (const auto& c : plan.memorized) CheckCondition(c, model);
            for (const auto& c : plan.not_memorized) CheckCondition(c, model);
            FUZZ_CHECK(plan.samples_per_condition >= 1 &&
                           plan.samples_per_condition <= kMaxCalibrationSamples,
                       "samples_per_condition");
            CheckCurvature(plan.curvature, model);
            CheckEarly(plan.early, model);
          });
      break;
    case 2:
      Run<v1::SpectrumRequest>(
          bytes, length, model, PlanSpectrum,
          [](const SpectrumPlan& plan, const LoadedModel& model) {
            CheckCondition(plan.condition, model);
            CheckCurvature(plan.curvature, model);
            FUZZ_CHECK(plan.seed.has_value() != plan.x.defined(), "seed xor x");
            if (plan.x.defined()) {
              std::vector<int64_t> batched{1};
              const auto& shape = model.network->config().sample_shape();
              batched.insert(batched.end(), shape.begin(), shape.end());
              FUZZ_CHECK(plan.x.sizes().vec() == batched, "x shape");
              FUZZ_CHECK(plan.x.scalar_type() == model.network->dtype(), "x dtype");
              FUZZ_CHECK(at::isfinite(plan.x).all().item<bool>(), "x not finite");
              FUZZ_CHECK(plan.timestep >= 0 &&
                             plan.timestep < model.denoiser->schedule().num_train_timesteps(),
                         "timestep");
            }
            if (plan.early.has_value()) {
              FUZZ_CHECK(plan.seed.has_value(), "early metrics without a seed");
              CheckEarly(*plan.early, model);
            }
          });
      break;
    case 3:
      Run<v1::SampleRequest>(bytes, length, model, PlanSample,
                             [](const SamplePlan& plan, const LoadedModel& model) {
                               CheckCondition(plan.condition, model);
                               CheckSampler(plan.sampler, model);
                               CheckSeeds(plan.seeds);
                             });
      break;
    case 4:
      Run<v1::EarlyMetricsRequest>(bytes, length, model, PlanEarlyMetrics,
                                   [](const EarlyMetricsPlan& plan, const LoadedModel& model) {
                                     CheckCondition(plan.condition, model);
                                     CheckEarly(plan.options, model);
                                     CheckSeeds(plan.seeds);
                                   });
      break;
  }
  return 0;
}
