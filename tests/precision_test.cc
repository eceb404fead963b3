// Reduced-precision networks (CheckpointOptions::dtype, config.pbtxt dtype):
// the network computes in bfloat16/float16, the engine stays float32.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>
#include <torch/version.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/checkpoint/load_model.h"
#include "core/runtime/torch_runtime.h"
#include "tests/test_util.h"
#include "tools/toy/model_directory.h"

namespace memaudit {
namespace {

namespace fs = std::filesystem;
using testing::ScratchDir;

std::string Committed(const std::string& name) {
  return absl::StrCat(MEMAUDIT_SOURCE_DIR, "/checkpoints/", name);
}

// Copies a committed model directory into `repository`, appending `extra`
// to its config.pbtxt.
std::string CopyWithConfigLines(const std::string& name, const std::string& repository,
                                const std::string& extra) {
  const fs::path target = fs::path(repository) / name;
  fs::copy(Committed(name), target, fs::copy_options::recursive);
  std::ofstream(target / kModelConfigFile, std::ios::app) << "\n" << extra << "\n";
  return target.string();
}

double RelativeError(const at::Tensor& value, const at::Tensor& reference) {
  return ((value - reference).norm() / reference.norm()).item<double>();
}

// mnist39's scripted U-Net converted to bfloat16: Forward takes and returns
// float32, the output carries bfloat16's rounding (about 2^-8 relative, so
// neither exact nor far), and gradients flow back through the casts.
TEST(PrecisionTest, Bfloat16DenoiserAgreesWithFloat32) {
  auto full = LoadModel(Committed("mnist39"));
  ASSERT_TRUE(full.ok()) << full.status();
  CheckpointOptions options;
  options.dtype = at::kBFloat16;
  auto reduced = LoadModel(Committed("mnist39"), options);
  ASSERT_TRUE(reduced.ok()) << reduced.status();
  EXPECT_EQ((*full)->network_dtype(), at::kFloat);
  EXPECT_EQ((*reduced)->network_dtype(), at::kBFloat16);
  EXPECT_EQ((*reduced)->dtype(), at::kFloat);

  at::manual_seed(3);
  const at::Tensor x = at::randn({4, 1, 28, 28});
  const at::Tensor t = at::full({4}, 20, at::kLong);
  const at::Tensor labels = at::tensor({9, 3, 9, 2}, at::kLong);
  auto output_and_gradient = [&](const DiffusionNetwork& checkpoint) {
    at::Tensor input = x.clone().requires_grad_(true);
    at::Tensor out = checkpoint.Forward(input, t, labels);
    (out * out).sum().backward();
    return std::make_pair(out.detach(), input.grad());
  };
  const auto [out32, grad32] = output_and_gradient(**full);
  const auto [out16, grad16] = output_and_gradient(**reduced);
  EXPECT_EQ(out16.scalar_type(), at::kFloat);
  EXPECT_EQ(grad16.scalar_type(), at::kFloat);
  const double output_error = RelativeError(out16, out32);
  EXPECT_GT(output_error, 1e-5) << "the network did not run reduced";
  EXPECT_LT(output_error, 0.05);
  EXPECT_LT(RelativeError(grad16, grad32), 0.1);
}

// Input gradients through a convolutional U-Net are right on every call at
// two threads: finite, and within 1e-4 of the same network's gradient in
// float64 (an independent computation: oneDNN has no float64 kernels).
// Debian 13's LibTorch 2.6 with its oneDNN convolution kernels returned
// all-NaN gradients for 22 of 120 such products and gradients 10% off for
// 75 of the 98 finite ones (python3-torch 2.6, the same model); loads switch
// oneDNN off there (ConfigureTorchKernels).
TEST(PrecisionTest, ConvolutionGradientsAreRightAtTwoThreads) {
  auto model = LoadModel(Committed("mnist39"));
  ASSERT_TRUE(model.ok()) << model.status();
  CheckpointOptions float64;
  float64.dtype = at::kDouble;
  auto reference = LoadModel(Committed("mnist39"), float64);
  ASSERT_TRUE(reference.ok()) << reference.status();
  const int threads_before = at::get_num_threads();
  at::set_num_threads(2);
  at::manual_seed(11);
  int non_finite = 0;
  int wrong = 0;
  int products = 0;
  double worst = 0;
  for (int round = 0; round < 12; ++round) {
    for (const int64_t batch : {2, 8, 16}) {
      const at::Tensor x = at::randn({batch, 1, 28, 28});
      const at::Tensor t = at::full({batch}, 20, at::kLong);
      const at::Tensor labels = at::randint(0, 10, {batch}, at::kLong);
      const at::Tensor cotangent = at::randn({batch, 1, 28, 28});
      auto gradient = [&](const DiffusionNetwork& checkpoint, at::ScalarType dtype) {
        at::Tensor input = x.to(dtype, /*non_blocking=*/false, /*copy=*/true).requires_grad_(true);
        checkpoint.Forward(input, t, labels).backward(cotangent.to(dtype));
        return input.grad().to(at::kDouble);
      };
      const at::Tensor measured = gradient(**model, at::kFloat);
      const at::Tensor exact = gradient(**reference, at::kDouble);
      ++products;
      if (!measured.isfinite().all().item<bool>()) {
        ++non_finite;
        continue;
      }
      const double error = RelativeError(measured, exact);
      worst = std::max(worst, error);
      if (error > 1e-4) ++wrong;
    }
  }
  at::set_num_threads(threads_before);
  const std::string one_dnn = at::globalContext().userEnabledMkldnn() ? "on" : "off";
  EXPECT_EQ(non_finite, 0) << "of " << products << " vector-Jacobian products (oneDNN " << one_dnn
                           << ")";
  EXPECT_EQ(wrong, 0) << "of " << products << " products more than 1e-4 from float64 (worst "
                      << worst << ", oneDNN " << one_dnn << ")";
}

// A load applies the oneDNN choice; MEMAUDIT_ONEDNN=on|off overrides the
// per-version default and anything else keeps it.
TEST(PrecisionTest, OneDnnFollowsTheVersionDefaultAndTheEnvironment) {
  ASSERT_EQ(std::getenv("MEMAUDIT_ONEDNN"), nullptr);
  const bool by_default = OneDnnEnabled();
  EXPECT_EQ(by_default, TORCH_VERSION_MAJOR < 2);
  auto model = LoadModel(Committed("mnist39"));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(at::globalContext().userEnabledMkldnn(), by_default);
  setenv("MEMAUDIT_ONEDNN", "on", 1);
  EXPECT_TRUE(OneDnnEnabled());
  setenv("MEMAUDIT_ONEDNN", "off", 1);
  EXPECT_FALSE(OneDnnEnabled());
  setenv("MEMAUDIT_ONEDNN", "perhaps", 1);
  EXPECT_EQ(OneDnnEnabled(), by_default);
  unsetenv("MEMAUDIT_ONEDNN");
}

// config.pbtxt's dtype wins over the server's --dtype.
TEST(PrecisionTest, ConfigDtypeOverridesTheServerDefault) {
  ScratchDir dir;
  const std::string model = CopyWithConfigLines("mnist39", dir.path(), "dtype: \"bfloat16\"");
  CheckpointOptions options;
  options.dtype = at::kFloat;
  auto loaded = LoadModel(model, options);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->network_dtype(), at::kBFloat16);
  EXPECT_EQ((*loaded)->dtype(), at::kFloat);
}

TEST(PrecisionTest, UnknownPrecisionNamesAreRefused) {
  EXPECT_EQ(*ParseDtype("bfloat16"), at::kBFloat16);
  EXPECT_EQ(*ParseDtype("float16"), at::kHalf);
  EXPECT_FALSE(ParseDtype("").value().has_value());
  const absl::Status half = ParseDtype("half").status();
  EXPECT_EQ(half.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(half.message().find("bfloat16"), std::string::npos) << half;

  ScratchDir dir;
  const std::string model = CopyWithConfigLines("mnist39", dir.path(), "dtype: \"fp8\"");
  const absl::Status status = LoadModel(model).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("dtype"), std::string::npos) << status;
  EXPECT_NE(status.message().find("fp8"), std::string::npos) << status;
}

// float16 on the CPU depends on LibTorch's kernels (1.13 has no float16
// convolution there; later versions add some). Either it runs, and agrees
// with float32 to float16's precision, or the load names the reason and
// the alternative.
TEST(PrecisionTest, Float16OnTheCpuRunsOrIsRefusedWithTheReason) {
  CheckpointOptions options;
  options.dtype = at::kHalf;
  auto reduced = LoadModel(Committed("mnist39"), options);
  if (reduced.ok()) {
    auto full = LoadModel(Committed("mnist39"));
    ASSERT_TRUE(full.ok()) << full.status();
    at::manual_seed(4);
    const at::Tensor x = at::randn({2, 1, 28, 28});
    const at::Tensor t = at::full({2}, 20, at::kLong);
    const at::Tensor labels = at::tensor({9, 3}, at::kLong);
    c10::NoGradGuard no_grad;
    EXPECT_LT(RelativeError((*reduced)->Forward(x, t, labels), (*full)->Forward(x, t, labels)),
              0.01);
  } else {
    const absl::Status& status = reduced.status();
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
    EXPECT_NE(status.message().find("model.pt"), std::string::npos) << status;
    EXPECT_NE(status.message().find("float16"), std::string::npos) << status;
    EXPECT_NE(status.message().find("bfloat16 on the CPU"), std::string::npos) << status;
  }
}

// unet_classes_sd was traced in float32: its time embedding is a float32
// constant of the graph, so converting the weights cannot make it run in
// bfloat16. The load says so instead of failing mid-audit.
TEST(PrecisionTest, TracedArchiveWithFloat32BakedInIsRefusedReduced) {
  CheckpointOptions options;
  options.dtype = at::kBFloat16;
  const absl::Status status = LoadModel(Committed("unet_classes_sd"), options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_NE(status.message().find("model.pt: does not run in bfloat16"), std::string::npos)
      << status;
}

// An archive saved in bfloat16 (as large checkpoints ship) runs as saved
// with a float32 engine around it.
TEST(PrecisionTest, ArchiveSavedInBfloat16RunsAsSavedWithAFloat32Engine) {
  ScratchDir dir;
  torch::jit::Module module("__torch__.memaudit.test.Scale");
  module.register_parameter("scale", at::full({2}, 2.0, at::kBFloat16), /*is_buffer=*/false);
  module.define(
      "def forward(self, x: Tensor, t: Tensor) -> Tensor:\n"
      "    return x * self.scale\n");
  ASSERT_TRUE(toy::WriteModelDirectory(dir.path(), testing::MixtureConfig("bf", 2), module).ok());
  auto loaded = LoadModel(dir.Join("bf"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->network_dtype(), at::kBFloat16);
  EXPECT_EQ((*loaded)->dtype(), at::kFloat);
  // 1/3 is not a bfloat16 number: the output shows the input's rounding
  // (bfloat16 keeps 8 significant bits).
  const at::Tensor x = at::full({1, 2}, 1.0f / 3.0f, at::kFloat);
  const at::Tensor out = (*loaded)->Forward(x, at::zeros({1}, at::kLong), at::Tensor());
  EXPECT_EQ(out.scalar_type(), at::kFloat);
  const float value = out[0][0].item<float>();
  EXPECT_NE(value, 2.0f / 3.0f);
  EXPECT_NEAR(value, 2.0 / 3.0, 2.0 / 3.0 / 128);
}

}  // namespace
}  // namespace memaudit
