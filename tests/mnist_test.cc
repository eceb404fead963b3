// The MNIST data loader's error paths and the U-Net's checkpoint contract.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "core/checkpoint/load_model.h"
#include "core/model/denoiser.h"
#include "tests/test_util.h"
#include "tools/mnist/mnist_data.h"
#include "tools/mnist/unet.h"
#include "tools/toy/model_directory.h"

namespace memaudit {
namespace {

TEST(MnistDataTest, MissingAndCorruptFilesAreClearErrors) {
  testing::ScratchDir dir;
  auto missing = mnist::LoadDigits(dir.path(), 3);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("scripts/fetch_mnist.sh"), std::string::npos);
  testing::WriteFile(dir.Join("3.json"), "{\"data\": [0, 0, 0]}");
  auto corrupt = mnist::LoadDigits(dir.path(), 3);
  EXPECT_EQ(corrupt.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(corrupt.status().message().find("3.json"), std::string::npos);
  EXPECT_EQ(mnist::LoadDigits(dir.path(), 12).status().code(), absl::StatusCode::kInvalidArgument);
}

// The U-Net obeys the CLASS_LABEL contract (forward(x, t, y), null class =
// num_classes) and its Jacobian is a real 784×784 network Jacobian.
TEST(UNetTest, LoadsAsAClassConditionalCheckpoint) {
  testing::ScratchDir dir;
  mnist::UNetOptions options;
  options.channels = 8;
  torch::jit::Module unet = mnist::BuildUNet(options, /*seed=*/1);
  v1::ModelConfig config = testing::MixtureConfig("unet", 784, v1::NoiseSchedule::LINEAR,
                                                  v1::EPSILON, options.num_classes);
  config.clear_sample_shape();
  for (int64_t d : {1, 28, 28}) config.add_sample_shape(d);
  ASSERT_TRUE(toy::WriteModelDirectory(dir.path(), config, unet).ok());
  auto checkpoint = LoadModel(dir.Join("unet"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  Denoiser denoiser(*checkpoint);
  at::Tensor x = at::randn({2, 1, 28, 28});
  at::Tensor labels = at::tensor({3, 10}, at::kLong);
  at::Tensor t = at::tensor({5, 500}, at::kLong);
  at::Tensor out = denoiser.Epsilon(x, t, labels);
  EXPECT_EQ(out.sizes(), x.sizes());
  // The class embedding matters: label 3 vs the null class differ.
  at::Tensor null_out = denoiser.Epsilon(x, t, at::tensor({10, 10}, at::kLong));
  EXPECT_FALSE(at::allclose(out[0], null_out[0]));
  EXPECT_TRUE(at::allclose(out[1], null_out[1]));
}

}  // namespace
}  // namespace memaudit
