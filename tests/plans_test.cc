// Request → plan: defaults filled once, every bad field named, the modes of
// an audit chosen from the request and the model's policy. No gRPC.
#include "server/plans.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "server/tensor_codec.h"
#include "tests/server_fixture.h"

namespace memaudit::server {
namespace {

using testing::kFixtureClasses;
using testing::kFixtureDim;

class PlansTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fixture_ = new testing::ServerFixture();
    registry_ = fixture_->NewRegistry().release();
    ASSERT_TRUE(registry_->Load("classes").ok());
    ASSERT_TRUE(registry_->Load("calibrated").ok());
  }
  static void TearDownTestSuite() {
    delete registry_;
    delete fixture_;
  }
  static std::shared_ptr<const LoadedModel> Model(const std::string& name = "classes") {
    auto model = registry_->Get(name);
    EXPECT_TRUE(model.ok()) << model.status();
    return model.ok() ? *model : nullptr;
  }
  static v1::Condition Class(int64_t label) {
    v1::Condition condition;
    condition.set_class_label(label);
    return condition;
  }

  static testing::ServerFixture* fixture_;
  static ModelRegistry* registry_;
};
testing::ServerFixture* PlansTest::fixture_ = nullptr;
ModelRegistry* PlansTest::registry_ = nullptr;

TEST_F(PlansTest, AnEmptyAuditRequestGetsEveryDefault) {
  auto plan = PlanAudit(v1::AuditRequest(), Model());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->mode, AuditPlan::Mode::kFull);
  ASSERT_EQ(plan->conditions.size(), 1u);
  EXPECT_EQ(plan->conditions[0].label, "none");
  // The null condition of a class-conditional model is the null class.
  ASSERT_TRUE(plan->conditions[0].row.defined());
  EXPECT_EQ(plan->conditions[0].row.item<int64_t>(), kFixtureClasses);
  EXPECT_EQ(plan->samples_per_condition, kDefaultSamplesPerCondition);
  EXPECT_EQ(plan->total_samples(), kDefaultSamplesPerCondition);
  EXPECT_EQ(plan->curvature.sampler.num_steps, SamplerOptions().num_steps);
  EXPECT_EQ(plan->curvature.method, SpectrumMethod::kAuto);
  EXPECT_EQ(plan->curvature.max_dense_dimension, kDefaultMaxDenseDimension);
  // Matrix-free spectra default to the verdict-grade tolerance.
  EXPECT_EQ(plan->curvature.arnoldi.tolerance, kVerdictGradeTolerance);
  EXPECT_TRUE(plan->curvature.timesteps.empty());
  EXPECT_FALSE(plan->early.has_value());
  EXPECT_NE(plan->model, nullptr);
}

TEST_F(PlansTest, AuditFieldsReachTheEngineOptions) {
  v1::AuditRequest request;
  *request.add_conditions() = Class(0);
  *request.add_conditions() = Class(2);
  request.set_samples_per_condition(5);
  request.set_seed(77);
  request.mutable_sampling()->set_sampler(v1::DDPM);
  request.mutable_sampling()->set_num_steps(20);
  request.mutable_curvature()->set_method(v1::ARNOLDI);
  request.mutable_curvature()->set_num_eigenvalues(2);  // d − 2 at d = 4
  request.mutable_curvature()->set_score_kind(v1::DIFFERENCE);
  request.add_timesteps(10);
  request.set_early_steps(2);
  auto plan = PlanAudit(request, Model());
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->conditions.size(), 2u);
  EXPECT_EQ(plan->conditions[1].label, "class 2");
  EXPECT_EQ(plan->total_samples(), 10);
  EXPECT_EQ(plan->seed, 77u);
  EXPECT_EQ(plan->curvature.sampler.kind, SamplerKind::kDdpm);
  EXPECT_EQ(plan->curvature.sampler.num_steps, 20);
  EXPECT_EQ(plan->curvature.method, SpectrumMethod::kArnoldi);
  EXPECT_EQ(plan->curvature.arnoldi.num_eigenvalues, 2);
  EXPECT_EQ(plan->curvature.arnoldi.tolerance, kVerdictGradeTolerance);
  EXPECT_EQ(plan->curvature.score_kind, ScoreKind::kDifference);
  EXPECT_EQ(plan->curvature.timesteps, std::vector<int64_t>{10});
  ASSERT_TRUE(plan->early.has_value());
  EXPECT_EQ(plan->early->steps, 2);
  EXPECT_EQ(plan->early->sampler.num_steps, 20);
}

struct BadField {
  const char* name;
  std::function<void(v1::AuditRequest*)> set;
  const char* field;  // must appear in the message
  absl::StatusCode code = absl::StatusCode::kInvalidArgument;
};

TEST_F(PlansTest, EachBadAuditFieldIsNamed) {
  const BadField cases[] = {
      {"negative samples", [](auto* r) { r->set_samples_per_condition(-1); },
       "samples_per_condition"},
      {"class out of range", [](auto* r) { r->add_conditions()->set_class_label(99); },
       "conditions[0]"},
      {"second condition bad",
       [](auto* r) {
         r->add_conditions()->set_class_label(1);
         r->add_conditions()->set_class_label(-3);
       },
       "conditions[1]"},
      {"embedding on a class model", [](auto* r) { r->add_conditions()->mutable_embedding(); },
       "conditions[0].embedding"},
      {"prompt to a model without a text encoder",
       [](auto* r) { r->add_conditions()->set_prompt("a cat"); },
       "conditions[0].prompt: the model has no text encoder"},
      {"condition name too long",
       [](auto* r) {
         v1::Condition* c = r->add_conditions();
         c->set_class_label(1);
         c->set_name(std::string(300, 'n'));
       },
       "conditions[0].name: 300 bytes"},
      {"too many steps", [](auto* r) { r->mutable_sampling()->set_num_steps(5000); },
       "sampling.num_steps"},
      {"eta", [](auto* r) { r->mutable_sampling()->set_eta(2); }, "sampling.eta"},
      {"steps_offset overflow",
       [](auto* r) {
         r->mutable_sampling()->set_steps_offset(std::numeric_limits<int64_t>::max());
       },
       "sampling.steps_offset"},
      {"unknown sampler",
       [](auto* r) { r->mutable_sampling()->set_sampler(static_cast<v1::Sampler>(77)); },
       "sampling.sampler"},
      {"guidance nan", [](auto* r) { r->mutable_sampling()->set_guidance_scale(std::nan("")); },
       "sampling.guidance_scale"},
      {"unknown score kind",
       [](auto* r) { r->mutable_curvature()->set_score_kind(static_cast<v1::ScoreKind>(99)); },
       "curvature.score_kind"},
      {"unknown method",
       [](auto* r) { r->mutable_curvature()->set_method(static_cast<v1::SpectrumMethod>(9)); },
       "curvature.method"},
      {"audit target", [](auto* r) { r->mutable_curvature()->set_target(v1::LARGEST_MAGNITUDE); },
       "curvature.target"},
      {"eigenvalue count", [](auto* r) { r->mutable_curvature()->set_num_eigenvalues(5000); },
       "curvature.num_eigenvalues"},
      {"tolerance", [](auto* r) { r->mutable_curvature()->set_positive_tolerance(1.5); },
       "curvature.positive_tolerance"},
      {"more eigenvalues than Arnoldi finds in d = 4 (at most d − 2)",
       [](auto* r) {
         r->mutable_curvature()->set_method(v1::ARNOLDI);
         r->mutable_curvature()->set_num_eigenvalues(kFixtureDim - 1);
       },
       "curvature.num_eigenvalues"},
      {"symmetrize with arnoldi",
       [](auto* r) {
         r->mutable_curvature()->set_method(v1::ARNOLDI);
         r->mutable_curvature()->set_symmetrize(true);
       },
       "curvature.symmetrize"},
      {"timestep",
       [](auto* r) {
         r->add_timesteps(3);
         r->add_timesteps(1000);
       },
       "timesteps[1]"},
      {"timestep above the first sampling step (980 of 50 steps)",
       [](auto* r) { r->add_timesteps(990); }, "timesteps[0]"},
      {"early steps beyond the schedule", [](auto* r) { r->set_early_steps(51); }, "early_steps"},
      {"negative early steps", [](auto* r) { r->set_early_steps(-1); }, "early_steps"},
      {"label-free flags need 3 conditions",
       [](auto* r) {
         r->set_early_only(true);
         r->add_conditions()->set_class_label(0);
         r->add_conditions()->set_class_label(1);
       },
       "early_only"},
  };
  for (const BadField& bad : cases) {
    SCOPED_TRACE(bad.name);
    v1::AuditRequest request;
    bad.set(&request);
    auto plan = PlanAudit(request, Model());
    ASSERT_FALSE(plan.ok());
    EXPECT_EQ(plan.status().code(), bad.code) << plan.status();
    EXPECT_NE(plan.status().message().find(bad.field), std::string::npos) << plan.status();
  }
}

// Prompts get the anisotropy score (it separated textmnist's memorized
// prompts); class labels keep Jeon's (the alignment ran the other way on the
// class-conditional U-Nets measured).
TEST(DefaultLabelFreeMetricTest, ByConditioningKind) {
  v1::Conditioning conditioning;
  conditioning.set_kind(v1::Conditioning::EMBEDDING);
  EXPECT_EQ(DefaultLabelFreeMetric(conditioning), EarlyMetric::kAnisotropy);
  conditioning.set_kind(v1::Conditioning::CLASS_LABEL);
  EXPECT_EQ(DefaultLabelFreeMetric(conditioning), EarlyMetric::kJeonSharpness);
}

TEST_F(PlansTest, EarlyOnlyIsCalibratedOrLabelFreeByThePolicy) {
  v1::AuditRequest request;
  request.set_early_only(true);
  for (int64_t c = 0; c < kFixtureClasses; ++c) *request.add_conditions() = Class(c);
  auto label_free = PlanAudit(request, Model("classes"));
  ASSERT_TRUE(label_free.ok()) << label_free.status();
  EXPECT_EQ(label_free->mode, AuditPlan::Mode::kEarlyLabelFree);
  ASSERT_TRUE(label_free->early.has_value());
  EXPECT_EQ(label_free->early->steps, 1);
  // Class labels: Jeon's sharpness by default, with its JVP; a metric
  // without a derivative (asked for) makes the early metrics forward-only.
  EXPECT_EQ(label_free->label_free_metric, EarlyMetric::kJeonSharpness);
  EXPECT_TRUE(label_free->early->derivative_metrics);
  request.set_label_free_metric("anisotropy");
  auto by_anisotropy = PlanAudit(request, Model("classes"));
  ASSERT_TRUE(by_anisotropy.ok()) << by_anisotropy.status();
  EXPECT_EQ(by_anisotropy->label_free_metric, EarlyMetric::kAnisotropy);
  EXPECT_FALSE(by_anisotropy->early->derivative_metrics);
  // A full audit with early metrics, and a calibrated one, keep every metric.
  v1::AuditRequest full = request;
  full.set_early_only(false);
  full.set_early_steps(1);
  auto full_plan = PlanAudit(full, Model("classes"));
  ASSERT_TRUE(full_plan.ok()) << full_plan.status();
  EXPECT_TRUE(full_plan->early->derivative_metrics);
  auto calibrated_plan = PlanAudit(request, Model("calibrated"));
  ASSERT_TRUE(calibrated_plan.ok()) << calibrated_plan.status();
  EXPECT_TRUE(calibrated_plan->early->derivative_metrics);
  for (const auto& [name, expected] :
       {std::pair{"sharpness", "unknown early metric"},
        std::pair{"hessian_score_squared", "unconditional generation"}}) {
    request.set_label_free_metric(name);
    auto refused = PlanAudit(request, Model("classes"));
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_NE(refused.status().message().find("label_free_metric"), std::string::npos)
        << refused.status();
    EXPECT_NE(refused.status().message().find(expected), std::string::npos) << refused.status();
  }
  request.clear_label_free_metric();
  auto calibrated = PlanAudit(request, Model("calibrated"));
  ASSERT_TRUE(calibrated.ok()) << calibrated.status();
  EXPECT_EQ(calibrated->mode, AuditPlan::Mode::kEarlyCalibrated);
  // A calibrated model flags even a single condition.
  request.mutable_conditions()->DeleteSubrange(1, kFixtureClasses - 1);
  EXPECT_TRUE(PlanAudit(request, Model("calibrated")).ok());
  // Its metric (Jeon's) compares a real condition with the null one: the
  // null condition itself is refused before any work.
  request.add_conditions()->set_null_condition(true);
  auto null_condition = PlanAudit(request, Model("calibrated"));
  ASSERT_FALSE(null_condition.ok());
  EXPECT_NE(null_condition.status().message().find("conditions[1]"), std::string::npos)
      << null_condition.status();
}

TEST_F(PlansTest, CalibrationNeedsTwoLabelledConditionsEachAndNamesTheBadOne) {
  v1::CalibrationRequest request;
  *request.add_memorized() = Class(0);
  *request.add_not_memorized() = Class(1);
  *request.add_not_memorized() = Class(2);
  auto too_few = PlanCalibration(request, Model());
  ASSERT_FALSE(too_few.ok());
  EXPECT_NE(too_few.status().message().find("at least 2"), std::string::npos);
  *request.add_memorized() = Class(42);
  auto bad = PlanCalibration(request, Model());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("memorized[1]"), std::string::npos) << bad.status();
  request.mutable_memorized(1)->set_class_label(0);
  request.set_early_steps(3);
  auto plan = PlanCalibration(request, Model());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->memorized.size(), 2u);
  EXPECT_EQ(plan->not_memorized.size(), 2u);
  EXPECT_EQ(plan->samples_per_condition, kDefaultCalibrationSamples);
  EXPECT_EQ(plan->early.steps, 3);
}

TEST_F(PlansTest, SpectrumPointsAreCheckedBeforeAnyWork) {
  auto plan_for = [&](const std::function<void(v1::SpectrumRequest*)>& set) {
    v1::SpectrumRequest request;
    set(&request);
    return PlanSpectrum(request, Model());
  };
  auto x_of = [](std::vector<int64_t> shape, double value) {
    v1::Tensor tensor;
    EncodeTensor(at::full(shape, value, at::kFloat), &tensor);
    return tensor;
  };
  EXPECT_NE(plan_for([](auto*) {}).status().message().find("point"), std::string::npos);
  EXPECT_NE(plan_for([&](auto* r) { *r->mutable_x() = x_of({kFixtureDim}, 0); })
                .status()
                .message()
                .find("timestep: required"),
            std::string::npos);
  for (const std::vector<int64_t>& shape :
       {std::vector<int64_t>{2, 2}, std::vector<int64_t>{kFixtureDim, 1}}) {
    auto wrong = plan_for([&](auto* r) {
      *r->mutable_x() = x_of(shape, 0);
      r->set_timestep(5);
    });
    ASSERT_FALSE(wrong.ok());
    EXPECT_NE(wrong.status().message().find("x.shape"), std::string::npos) << wrong.status();
  }
  auto not_finite = plan_for([&](auto* r) {
    *r->mutable_x() = x_of({kFixtureDim}, std::nan(""));
    r->set_timestep(5);
  });
  EXPECT_NE(not_finite.status().message().find("x.data: holds NaN"), std::string::npos)
      << not_finite.status();
  auto huge = plan_for([&](auto* r) {
    *r->mutable_x() = x_of({kFixtureDim}, 1e30);
    r->set_timestep(5);
  });
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(huge.status().message().find("x.data: holds a value of magnitude 1e+30"),
            std::string::npos)
      << huge.status();
  EXPECT_TRUE(plan_for([&](auto* r) {
                *r->mutable_x() = x_of({kFixtureDim}, -3.5);
                r->set_timestep(5);
              }).ok());
  auto early_without_seed = plan_for([&](auto* r) {
    *r->mutable_x() = x_of({1, kFixtureDim}, 0.5);
    r->set_timestep(5);
    r->set_early_steps(1);
  });
  EXPECT_NE(early_without_seed.status().message().find("early_steps"), std::string::npos);
  // A sampled point's timestep must be one the trajectory reaches: known
  // before sampling, named as the request's field.
  auto above_first_step = plan_for([&](auto* r) {
    r->set_seed(1);
    r->mutable_sampling()->set_num_steps(10);  // the first step is 900
    r->set_timestep(950);
  });
  EXPECT_EQ(above_first_step.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(above_first_step.status().message().find(
                "timestep: timestep 950 is above the first sampling step 900 (10 steps)"),
            std::string::npos)
      << above_first_step.status();
  auto early_too_many = plan_for([&](auto* r) {
    r->set_seed(1);
    r->set_early_steps(51);
  });
  EXPECT_NE(early_too_many.status().message().find("early_steps"), std::string::npos);

  auto at_x = plan_for([&](auto* r) {
    *r->mutable_x() = x_of({1, kFixtureDim}, 0.5);
    r->set_timestep(5);
  });
  ASSERT_TRUE(at_x.ok()) << at_x.status();
  EXPECT_FALSE(at_x->seed.has_value());
  EXPECT_EQ(at_x->x.sizes().vec(), (std::vector<int64_t>{1, kFixtureDim}));
  EXPECT_EQ(at_x->x.scalar_type(), at::kDouble);  // the model's dtype
  auto at_seed = plan_for([&](auto* r) {
    r->set_seed(3);
    r->set_timestep(7);
    r->set_return_point(true);
  });
  ASSERT_TRUE(at_seed.ok()) << at_seed.status();
  EXPECT_EQ(at_seed->seed, 3u);
  EXPECT_EQ(at_seed->curvature.timesteps, std::vector<int64_t>{7});
  EXPECT_TRUE(at_seed->curvature.keep_points);
}

TEST_F(PlansTest, SampleAndEarlyMetricRequestsBoundTheirSeeds) {
  v1::SampleRequest sample;
  EXPECT_NE(PlanSample(sample, Model()).status().message().find("seeds"), std::string::npos);
  for (int i = 0; i <= kMaxSeedsPerRequest; ++i) sample.add_seeds(i);
  EXPECT_NE(PlanSample(sample, Model()).status().message().find("seeds"), std::string::npos);
  sample.mutable_seeds()->Truncate(3);
  *sample.mutable_condition() = Class(1);
  auto plan = PlanSample(sample, Model());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->seeds, (std::vector<uint64_t>{0, 1, 2}));

  v1::EarlyMetricsRequest early;
  early.add_seeds(1);
  early.set_hutchinson_probes(5000);
  EXPECT_NE(PlanEarlyMetrics(early, Model()).status().message().find("hutchinson_probes"),
            std::string::npos);
  early.set_hutchinson_probes(0);
  early.set_steps(99);
  EXPECT_NE(PlanEarlyMetrics(early, Model()).status().message().find("steps"), std::string::npos);
  early.set_steps(2);
  auto early_plan = PlanEarlyMetrics(early, Model());
  ASSERT_TRUE(early_plan.ok()) << early_plan.status();
  EXPECT_EQ(early_plan->options.steps, 2);
  EXPECT_EQ(early_plan->options.hutchinson_probes, EarlyMetricOptions().hutchinson_probes);
}

TEST_F(PlansTest, MitigationGetsItsDefaultsAndNamesEachBadField) {
  v1::MitigateRequest request;
  request.add_seeds(7);
  request.add_seeds(8);
  *request.mutable_condition() = Class(0);
  auto plan = PlanMitigate(request, Model());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->seeds, (std::vector<uint64_t>{7, 8}));
  EXPECT_EQ(plan->guard.max_steps, kDefaultMitigationSteps);
  EXPECT_EQ(plan->guard.step_size, MitigationOptions().step_size);
  EXPECT_EQ(plan->guard.target, 0);
  // The guard protects exactly the sampling that is judged.
  EXPECT_EQ(plan->guard.sampler.num_steps, plan->curvature.sampler.num_steps);
  EXPECT_EQ(plan->guard.sampler.guidance, plan->curvature.sampler.guidance);
  ASSERT_TRUE(plan->condition.row.defined());
  EXPECT_EQ(plan->condition.row.item<int64_t>(), 0);

  request.set_max_steps(3);
  request.set_step_size(0.2);
  request.set_target_sharpness(0.5);
  plan = PlanMitigate(request, Model());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->guard.max_steps, 3);
  EXPECT_EQ(plan->guard.step_size, 0.2);
  EXPECT_EQ(plan->guard.target, 0.5);

  const std::vector<std::pair<std::string, std::function<void(v1::MitigateRequest&)>>> bad = {
      {"seeds", [](v1::MitigateRequest& r) { r.clear_seeds(); }},
      {"max_steps", [](v1::MitigateRequest& r) { r.set_max_steps(0); }},
      {"max_steps", [](v1::MitigateRequest& r) { r.set_max_steps(kMaxMitigationSteps + 1); }},
      {"step_size", [](v1::MitigateRequest& r) { r.set_step_size(0); }},
      {"step_size", [](v1::MitigateRequest& r) { r.set_step_size(1.5); }},
      {"target_sharpness", [](v1::MitigateRequest& r) { r.set_target_sharpness(-1); }},
      {"target_sharpness",
       [](v1::MitigateRequest& r) {
         r.set_target_sharpness(std::numeric_limits<double>::quiet_NaN());
       }},
      {"decode", [](v1::MitigateRequest& r) { r.set_decode(true); }},
      {"condition", [](v1::MitigateRequest& r) { r.mutable_condition()->set_class_label(99); }},
      {"curvature.target",
       [](v1::MitigateRequest& r) { r.mutable_curvature()->set_target(v1::SMALLEST_REAL); }},
      {"sampling.num_steps",
       [](v1::MitigateRequest& r) { r.mutable_sampling()->set_num_steps(-2); }},
      // w = 0 ignores the condition the guard measures.
      {"sampling.guidance_scale",
       [](v1::MitigateRequest& r) { r.mutable_sampling()->set_guidance_scale(0); }},
  };
  for (const auto& [field, spoil] : bad) {
    v1::MitigateRequest spoilt = request;
    spoil(spoilt);
    auto refused = PlanMitigate(spoilt, Model());
    ASSERT_FALSE(refused.ok()) << field;
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(refused.status().message().find(field), std::string::npos)
        << field << ": " << refused.status().message();
  }
}

}  // namespace
}  // namespace memaudit::server
