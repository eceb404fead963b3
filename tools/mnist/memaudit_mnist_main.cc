// memaudit-mnist: the MNIST memorization setup of Jeon et al. — a
// class-conditional ε-U-Net trained on every "3" (generalizing class) and
// one "9" repeated 100 times (memorized class).
//
//   scripts/fetch_mnist.sh
//   build/tools/mnist/memaudit-mnist train --repository models --name mnist39
#include <ATen/ATen.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "core/runtime/torch_runtime.h"
#include "core/verdict/reference_set.h"
#include "tools/mnist/mnist_data.h"
#include "tools/mnist/unet.h"
#include "tools/toy/model_directory.h"
#include "tools/toy/toy_mlp.h"

namespace memaudit::mnist {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "memaudit-mnist: %s\n", std::string(status.message()).c_str());
  return 1;
}

}  // namespace

int Main(int argc, char** argv) {
  CLI::App app{"memaudit-mnist: train the MNIST memorization model"};
  app.require_subcommand(1);
  std::string repository = "models", name = "mnist39", digits = DefaultDigitsDirectory();
  int threads = 0;
  int64_t duplicates = 100, memorized_index = 0;
  UNetOptions unet;
  toy::TrainOptions train;
  train.steps = 4000;
  train.batch_size = 64;
  train.learning_rate = 1e-3;
  app.add_option("--threads", threads, "intra-op threads (0: all cores)");
  CLI::App* train_command = app.add_subcommand("train", "train and write the model directory");
  train_command->add_option("--repository", repository)->capture_default_str();
  train_command->add_option("--name", name)->capture_default_str();
  train_command->add_option("--digits", digits, "MNIST cache (scripts/fetch_mnist.sh)")
      ->capture_default_str();
  train_command->add_option("--duplicates", duplicates, "copies of the memorized 9")
      ->capture_default_str();
  train_command->add_option("--nine", memorized_index, "which 9 (index in the 9s)")
      ->capture_default_str();
  train_command->add_option("--channels", unet.channels, "U-Net width C")->capture_default_str();
  train_command->add_option("--steps", train.steps)->capture_default_str();
  train_command->add_option("--batch", train.batch_size)->capture_default_str();
  train_command->add_option("--lr", train.learning_rate)->capture_default_str();
  train_command->add_option("--seed", train.seed)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  ConfigureTorchRuntime(threads);

  auto threes = LoadDigits(digits, 3);
  if (!threes.ok()) return Fail(threes.status());
  auto nines = LoadDigits(digits, 9);
  if (!nines.ok()) return Fail(nines.status());
  // Pixels to [-1, 1]; all 3s, one 9 repeated.
  at::Tensor nine = (*nines)[memorized_index].unsqueeze(0);
  at::Tensor images =
      at::cat({*threes, nine.expand({duplicates, 1, 28, 28})}).mul(2.0).sub(1.0).contiguous();
  at::Tensor labels =
      at::cat({at::full({threes->size(0)}, 3, at::kLong), at::full({duplicates}, 9, at::kLong)});

  v1::ModelConfig config;
  config.set_name(name);
  for (int64_t d : {1, 28, 28}) config.add_sample_shape(d);
  config.set_prediction_type(v1::EPSILON);
  *config.mutable_noise_schedule() = toy::DefaultSchedule(v1::NoiseSchedule::LINEAR);
  config.mutable_conditioning()->set_kind(v1::Conditioning::CLASS_LABEL);
  config.mutable_conditioning()->set_num_classes(unet.num_classes);
  auto schedule = NoiseSchedule::Create(config.noise_schedule());
  torch::jit::Module module = BuildUNet(unet, train.seed);
  train.null_label = unet.num_classes;
  auto report = toy::TrainEpsilonModel(
      module, images, *schedule, train,
      [](int64_t step, double loss) {
        std::printf("step %6lld  loss %.4f\n", static_cast<long long>(step), loss);
        std::fflush(stdout);
      },
      labels);
  if (!report.ok()) return Fail(report.status());
  auto reference = ReferenceSet::FromTensor(images);
  if (!reference.ok()) return Fail(reference.status());
  if (absl::Status s = toy::WriteModelDirectory(repository, config, module, &*reference); !s.ok()) {
    return Fail(s);
  }
  std::printf("trained in %.1f s, final loss %.4f; wrote %s/%s\n", report->seconds,
              report->final_loss, repository.c_str(), name.c_str());
  return 0;
}

}  // namespace memaudit::mnist

int main(int argc, char** argv) { return memaudit::mnist::Main(argc, argv); }
