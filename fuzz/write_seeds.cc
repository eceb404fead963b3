// Writes the seed corpora of fuzz_tensor_codec and fuzz_plans: small valid
// (and a few nearly valid) serialized messages. Usage:
//   fuzz_write_seeds <repository>/fuzz/corpus
// fuzz_plans inputs are one selector byte (planner + 5 × model, see
// fuzz_plans.cc) followed by the request.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "memaudit/v1/audit_service.pb.h"
#include "memaudit/v1/tensor.pb.h"

namespace v1 = memaudit::v1;

namespace {

std::string corpus;

void Write(const std::string& harness, const std::string& name, const std::string& bytes) {
  const std::filesystem::path dir = std::filesystem::path(corpus) / harness;
  std::filesystem::create_directories(dir);
  std::ofstream((dir / name).string(), std::ios::binary) << bytes;
}

template <typename T>
v1::Tensor MakeTensor(v1::DType dtype, std::vector<int64_t> shape, std::vector<T> values) {
  v1::Tensor tensor;
  tensor.set_dtype(dtype);
  for (int64_t dim : shape) tensor.add_shape(dim);
  tensor.set_data(values.data(), values.size() * sizeof(T));
  return tensor;
}

// Planners and models of fuzz_plans.cc.
enum Planner { kAudit, kCalibration, kSpectrum, kSample, kEarlyMetrics };
enum Model { kClasses, kCalibrated, kEmb, kPlain };

void WritePlan(const std::string& name, Planner planner, Model model,
               const google::protobuf::Message& request) {
  std::string bytes(1, static_cast<char>(planner + 5 * model));
  bytes += request.SerializeAsString();
  Write("fuzz_plans", name, bytes);
}

v1::Condition Class(int64_t label) {
  v1::Condition condition;
  condition.set_class_label(label);
  return condition;
}

v1::Condition Embedding(double a, double b) {
  v1::Condition condition;
  *condition.mutable_embedding() =
      MakeTensor<float>(v1::FLOAT32, {2}, {static_cast<float>(a), static_cast<float>(b)});
  return condition;
}

void WriteTensorSeeds() {
  const std::string h = "fuzz_tensor_codec";
  Write(h, "float32_2x2",
        MakeTensor<float>(v1::FLOAT32, {2, 2}, {1, -2, 0.5, 3}).SerializeAsString());
  Write(h, "float64_3",
        MakeTensor<double>(v1::FLOAT64, {3}, {0.25, -1, 1e300}).SerializeAsString());
  Write(h, "int64_2", MakeTensor<int64_t>(v1::INT64, {2}, {7, -1}).SerializeAsString());
  Write(h, "float64_scalar", MakeTensor<double>(v1::FLOAT64, {}, {4}).SerializeAsString());
  Write(h, "float32_0x3", MakeTensor<float>(v1::FLOAT32, {0, 3}, {}).SerializeAsString());
  Write(h, "float32_1x1x2", MakeTensor<float>(v1::FLOAT32, {1, 1, 2}, {1, 2}).SerializeAsString());
  // Refused: NaN, a negative dimension, a short buffer, no dtype.
  Write(h, "nan", MakeTensor<float>(v1::FLOAT32, {1}, {std::nanf("")}).SerializeAsString());
  Write(h, "negative_dim", MakeTensor<float>(v1::FLOAT32, {-1, 2}, {}).SerializeAsString());
  Write(h, "short", MakeTensor<double>(v1::FLOAT64, {3}, {1, 2}).SerializeAsString());
  Write(h, "no_dtype", MakeTensor<float>(v1::DTYPE_UNSPECIFIED, {1}, {1}).SerializeAsString());
  // Found by fuzzing: shapes whose element count overflows int64.
  Write(h, "overflow_383x2p57",
        MakeTensor<float>(v1::FLOAT32, {383, (int64_t{1} << 57) - 1}, {}).SerializeAsString());
  Write(h, "overflow_2x2p62",
        MakeTensor<float>(v1::FLOAT32, {2, int64_t{1} << 62}, {}).SerializeAsString());
  Write(h, "empty_0x2p62x2p62",
        MakeTensor<double>(v1::FLOAT64, {0, int64_t{1} << 62, int64_t{1} << 62}, {})
            .SerializeAsString());
}

void WritePlanSeeds() {
  {
    WritePlan("audit_default", kAudit, kClasses, v1::AuditRequest());
    v1::AuditRequest request;
    *request.add_conditions() = Class(0);
    *request.add_conditions() = Class(2);
    request.set_samples_per_condition(5);
    request.set_seed(77);
    request.mutable_sampling()->set_sampler(v1::DDPM);
    request.mutable_sampling()->set_num_steps(20);
    request.mutable_curvature()->set_method(v1::ARNOLDI);
    request.mutable_curvature()->set_num_eigenvalues(3);
    request.mutable_curvature()->set_score_kind(v1::DIFFERENCE);
    request.add_timesteps(10);
    request.set_early_steps(2);
    WritePlan("audit_classes_options", kAudit, kClasses, request);
    v1::AuditRequest early;
    for (int64_t label : {0, 1, 2}) *early.add_conditions() = Class(label);
    early.set_early_only(true);
    WritePlan("audit_label_free", kAudit, kClasses, early);
    WritePlan("audit_calibrated_early", kAudit, kCalibrated, early);
    v1::AuditRequest emb;
    *emb.add_conditions() = Embedding(1, 0);
    emb.add_conditions()->set_null_condition(true);
    emb.mutable_sampling()->set_guidance_scale(3);
    emb.mutable_sampling()->set_eta(0.5);
    emb.mutable_curvature()->set_score_kind(v1::GUIDED);
    emb.mutable_curvature()->set_symmetrize(true);
    emb.mutable_curvature()->set_method(v1::DENSE);
    WritePlan("audit_embedding", kAudit, kEmb, emb);
    v1::AuditRequest plain;
    plain.mutable_sampling()->set_num_steps(10);
    plain.mutable_sampling()->set_steps_offset(1);
    plain.add_timesteps(0);
    plain.add_timesteps(500);
    plain.mutable_curvature()->set_positive_tolerance(0.01);
    plain.mutable_curvature()->set_jacobian_chunk_rows(2);
    WritePlan("audit_plain", kAudit, kPlain, plain);
  }
  {
    v1::CalibrationRequest request;
    *request.add_memorized() = Class(0);
    *request.add_memorized() = Class(0);
    *request.add_not_memorized() = Class(1);
    *request.add_not_memorized() = Class(2);
    request.set_samples_per_condition(2);
    request.set_early_steps(3);
    request.mutable_curvature()->set_arnoldi_tolerance(1e-4);
    request.mutable_curvature()->set_max_restarts(10);
    WritePlan("calibration_classes", kCalibration, kClasses, request);
    v1::CalibrationRequest emb;
    *emb.add_memorized() = Embedding(1, 0);
    *emb.add_memorized() = Embedding(1, 1);
    *emb.add_not_memorized() = Embedding(0, 1);
    *emb.add_not_memorized() = Embedding(0.5, 0.5);
    WritePlan("calibration_embedding", kCalibration, kEmb, emb);
  }
  {
    v1::SpectrumRequest seed;
    seed.set_seed(3);
    seed.set_timestep(20);
    *seed.mutable_condition() = Class(1);
    seed.set_early_steps(1);
    seed.set_return_point(true);
    WritePlan("spectrum_seed", kSpectrum, kClasses, seed);
    v1::SpectrumRequest x;
    *x.mutable_x() = MakeTensor<float>(v1::FLOAT32, {4}, {0.5, -1, 2, 0});
    x.set_timestep(100);
    WritePlan("spectrum_x_plain", kSpectrum, kPlain, x);
    v1::SpectrumRequest batched;
    *batched.mutable_x() = MakeTensor<double>(v1::FLOAT64, {1, 4}, {0.5, -1, 2, 0});
    batched.set_timestep(999);
    *batched.mutable_condition() = Embedding(0, 1);
    batched.mutable_curvature()->set_target(v1::SMALLEST_REAL);
    batched.mutable_curvature()->set_method(v1::ARNOLDI);
    WritePlan("spectrum_x_embedding", kSpectrum, kEmb, batched);
  }
  {
    v1::SampleRequest request;
    request.add_seeds(1);
    request.add_seeds(2);
    *request.mutable_condition() = Class(2);
    request.mutable_sampling()->set_num_steps(5);
    WritePlan("sample_classes", kSample, kClasses, request);
    v1::SampleRequest emb;
    emb.add_seeds(9);
    *emb.mutable_condition() = Embedding(1, 0);
    emb.mutable_sampling()->set_guidance_scale(-2);
    WritePlan("sample_embedding", kSample, kEmb, emb);
    v1::SampleRequest plain;
    plain.add_seeds(0);
    WritePlan("sample_plain", kSample, kPlain, plain);
  }
  {
    v1::EarlyMetricsRequest request;
    request.add_seeds(1);
    request.add_seeds(5);
    *request.mutable_condition() = Class(0);
    request.set_steps(2);
    request.set_hutchinson_probes(4);
    request.mutable_sampling()->set_num_steps(10);
    WritePlan("early_classes", kEarlyMetrics, kCalibrated, request);
    v1::EarlyMetricsRequest plain;
    plain.add_seeds(4);
    WritePlan("early_plain", kEarlyMetrics, kPlain, plain);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <fuzz/corpus directory>\n", argv[0]);
    return 2;
  }
  corpus = argv[1];
  WriteTensorSeeds();
  WritePlanSeeds();
  return 0;
}
