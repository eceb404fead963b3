// memaudit-toy: writes analytic and trained toy model directories, and runs
// the seed's toy experiment (README.md "Toy experiment").
#include <ATen/ATen.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "absl/strings/str_format.h"
#include "core/checkpoint/load_model.h"
#include "core/runtime/tensor_file.h"
#include "core/runtime/torch_runtime.h"
#include "core/verdict/reference_set.h"
#include "tools/toy/conv_net.h"
#include "tools/toy/gaussian_mixture.h"
#include "tools/toy/model_directory.h"
#include "tools/toy/toy_experiment.h"
#include "tools/toy/toy_mlp.h"

namespace memaudit::toy {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "memaudit-toy: %s\n", std::string(status.message()).c_str());
  return 1;
}

v1::ModelConfig BaseConfig(const std::string& name, int64_t dim, v1::PredictionType prediction,
                           const v1::NoiseSchedule& schedule) {
  v1::ModelConfig config;
  config.set_name(name);
  config.add_sample_shape(dim);
  config.set_prediction_type(prediction);
  *config.mutable_noise_schedule() = schedule;
  config.mutable_conditioning()->set_kind(v1::Conditioning::NONE);
  return config;
}

struct MixtureFlags {
  std::string repository = "models";
  std::string name;
  std::string schedule = "linear";
  std::string prediction = "epsilon";
  int64_t timesteps = 1000;
};

void AddMixtureFlags(CLI::App* app, MixtureFlags& flags) {
  app->add_option("--repository", flags.repository, "model repository directory")
      ->capture_default_str();
  app->add_option("--name", flags.name, "model name (directory)")->required();
  app->add_option("--schedule", flags.schedule, "linear | scaled_linear | cosine")
      ->capture_default_str();
  app->add_option("--prediction", flags.prediction, "epsilon | v_prediction | sample | score")
      ->capture_default_str();
  app->add_option("--timesteps", flags.timesteps, "num_train_timesteps")->capture_default_str();
}

int WriteMixture(const MixtureFlags& flags, const GaussianMixture& mixture, int64_t num_classes,
                 const ReferenceSet* reference, bool embedding = false) {
  auto kind = ParseScheduleKind(flags.schedule);
  if (!kind.ok()) return Fail(kind.status());
  auto prediction = ParsePredictionType(flags.prediction);
  if (!prediction.ok()) return Fail(prediction.status());
  v1::ModelConfig config =
      BaseConfig(flags.name, mixture.dim(), *prediction, DefaultSchedule(*kind, flags.timesteps));
  if (num_classes > 0 && embedding) {
    config.mutable_conditioning()->set_kind(v1::Conditioning::EMBEDDING);
    config.mutable_conditioning()->add_embedding_shape(num_classes);
  } else if (num_classes > 0) {
    config.mutable_conditioning()->set_kind(v1::Conditioning::CLASS_LABEL);
    config.mutable_conditioning()->set_num_classes(num_classes);
  }
  auto schedule = NoiseSchedule::Create(config.noise_schedule());
  if (!schedule.ok()) return Fail(schedule.status());
  auto module = BuildGaussianMixtureModule(
      mixture, *schedule, *prediction, num_classes,
      embedding ? MixtureConditioning::kEmbedding : MixtureConditioning::kClassLabel);
  if (!module.ok()) return Fail(module.status());
  if (absl::Status s = WriteModelDirectory(flags.repository, config, *module, reference); !s.ok()) {
    return Fail(s);
  }
  if (embedding) {
    // The null condition (the "empty prompt"): the all-zero embedding.
    const std::string null_path =
        flags.repository + "/" + flags.name + "/" + DiffusionNetwork::kNullConditionFile;
    if (absl::Status s = SaveTensorFile(null_path, at::zeros({num_classes}, at::kFloat)); !s.ok()) {
      return Fail(s);
    }
  }
  std::printf("wrote %s/%s (exact Gaussian mixture, %lld components, d = %lld)\n",
              flags.repository.c_str(), flags.name.c_str(), static_cast<long long>(mixture.size()),
              static_cast<long long>(mixture.dim()));
  return 0;
}

}  // namespace

int Main(int argc, char** argv) {
  CLI::App app{"memaudit-toy: analytic and toy diffusion models, and the toy experiment"};
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads, "intra-op threads (0: all cores)");

  MixtureFlags gmm_flags;
  int64_t gmm_dim = 2, gmm_components = 3, gmm_classes = 0;
  uint64_t gmm_seed = 0;
  CLI::App* gmm = app.add_subcommand("gmm", "exact model of a random Gaussian mixture");
  AddMixtureFlags(gmm, gmm_flags);
  gmm->add_option("--dim", gmm_dim, "dimension d")->capture_default_str();
  gmm->add_option("--components", gmm_components, "mixture components")->capture_default_str();
  gmm->add_option("--classes", gmm_classes, "class-conditional with this many classes (0: none)")
      ->capture_default_str();
  gmm->add_option("--seed", gmm_seed, "random seed")->capture_default_str();
  bool gmm_embedding = false;
  gmm->add_flag("--embedding", gmm_embedding,
                "condition on a class embedding [classes] (EMBEDDING, with null_condition.pt) "
                "instead of a class label");

  MixtureFlags empirical_flags;
  std::string empirical_points;
  double empirical_variance = 1e-4;
  CLI::App* empirical = app.add_subcommand(
      "empirical", "exact model of the empirical mixture of a point set (memorizes every point)");
  AddMixtureFlags(empirical, empirical_flags);
  empirical->add_option("--points", empirical_points, "tensor file [N, d] (torch.save)")
      ->required();
  empirical->add_option("--variance", empirical_variance, "per-component variance")
      ->capture_default_str();

  std::string train_repository = "models", train_name = "toy2d";
  ToyDataOptions data_options;
  MlpOptions mlp_options;
  TrainOptions train_options;
  CLI::App* train = app.add_subcommand(
      "train", "train the toy epsilon-MLP on a Gaussian cloud plus one duplicated point");
  train->add_option("--repository", train_repository, "model repository")->capture_default_str();
  train->add_option("--name", train_name, "model name")->capture_default_str();
  train->add_option("--dim", data_options.dim, "data dimension")->capture_default_str();
  train->add_option("--intrinsic-dim", data_options.intrinsic_dim,
                    "dimension of the cloud's subspace (default: --dim)");
  train->add_option("--cloud", data_options.cloud_points, "cloud points")->capture_default_str();
  train->add_option("--duplicates", data_options.duplicates, "copies of the duplicated point")
      ->capture_default_str();
  train
      ->add_option("--distance", data_options.duplicate_distance,
                   "distance of the duplicated point from the cloud centre")
      ->capture_default_str();
  train->add_option("--steps", train_options.steps, "optimizer steps")->capture_default_str();
  train->add_option("--batch", train_options.batch_size, "batch size")->capture_default_str();
  train->add_option("--lr", train_options.learning_rate, "peak learning rate")
      ->capture_default_str();
  train->add_option("--hidden", mlp_options.hidden, "hidden width")->capture_default_str();
  train->add_option("--layers", mlp_options.layers, "hidden layers")->capture_default_str();
  uint64_t train_seed = 0;
  train->add_option("--seed", train_seed, "seed for data, initialization and training")
      ->capture_default_str();

  std::string conv_repository = "models", conv_name = "conv4x64";
  ConvNetOptions conv_options;
  int64_t conv_size = 64;
  uint64_t conv_seed = 0;
  CLI::App* conv = app.add_subcommand(
      "conv", "a small convolutional epsilon-model on [C, S, S] samples (untrained weights)");
  conv->add_option("--repository", conv_repository, "model repository")->capture_default_str();
  conv->add_option("--name", conv_name, "model name")->capture_default_str();
  conv->add_option("--channels", conv_options.channels, "C")->capture_default_str();
  conv->add_option("--size", conv_size, "S (height = width)")->capture_default_str();
  conv->add_option("--width", conv_options.width, "hidden channels")->capture_default_str();
  conv->add_option("--seed", conv_seed, "initialization seed")->capture_default_str();
  conv->add_option("--classes", conv_options.classes,
                   "class-conditional on this many classes (0: unconditional)")
      ->capture_default_str();

  std::string experiment_model;
  ToyExperimentOptions experiment_options;
  int64_t experiment_t = -1;
  CLI::App* experiment =
      app.add_subcommand("experiment", "sample, take spectra, and tabulate copies vs. the rest");
  experiment->add_option("--model", experiment_model, "model directory")->required();
  experiment->add_option("--samples", experiment_options.samples, "samples")->capture_default_str();
  experiment->add_option("--seed", experiment_options.seed, "first seed")->capture_default_str();
  experiment
      ->add_option("--steps", experiment_options.measure.sampler.num_steps, "DDIM sampling steps")
      ->capture_default_str();
  experiment->add_option("--t", experiment_t,
                         "evaluation timestep (default: first step with sigma_t < 0.1)");
  bool experiment_per_sample = false;
  experiment->add_flag("--per-sample", experiment_per_sample, "print one line per sample");

  CLI11_PARSE(app, argc, argv);
  ConfigureTorchRuntime(threads);

  if (*gmm) {
    GaussianMixture mixture = RandomGaussianMixture(gmm_dim, gmm_components, gmm_seed, gmm_classes);
    if (gmm_embedding && gmm_classes < 1) {
      return Fail(absl::InvalidArgumentError("--embedding needs --classes"));
    }
    return WriteMixture(gmm_flags, mixture, gmm_classes, nullptr, gmm_embedding);
  }
  if (*empirical) {
    auto points = LoadTensorFile(empirical_points);
    if (!points.ok()) return Fail(points.status());
    if (points->dim() != 2 || !at::isFloatingType(points->scalar_type())) {
      return Fail(
          absl::InvalidArgumentError(empirical_points + ": expected a float [N, d] tensor"));
    }
    auto reference = ReferenceSet::FromTensor(*points);
    if (!reference.ok()) return Fail(reference.status());
    return WriteMixture(empirical_flags, EmpiricalMixture(*points, empirical_variance), 0,
                        &*reference);
  }
  if (*train) {
    if (data_options.intrinsic_dim <= 0 || train->count("--intrinsic-dim") == 0) {
      data_options.intrinsic_dim = data_options.dim;
    }
    data_options.seed = train_seed;
    train_options.seed = train_seed;
    ToyData data = MakeToyData(data_options);
    v1::ModelConfig config = BaseConfig(train_name, data_options.dim, v1::EPSILON,
                                        DefaultSchedule(v1::NoiseSchedule::LINEAR));
    auto schedule = NoiseSchedule::Create(config.noise_schedule());
    torch::jit::Module module = BuildToyMlp(data_options.dim, mlp_options, train_seed);
    auto report = TrainEpsilonModel(
        module, data.points, *schedule, train_options, [](int64_t step, double loss) {
          std::printf("step %6lld  loss %.4f\n", static_cast<long long>(step), loss);
          std::fflush(stdout);
        });
    if (!report.ok()) return Fail(report.status());
    auto reference = ReferenceSet::FromTensor(data.points);
    if (!reference.ok()) return Fail(reference.status());
    if (absl::Status s = WriteModelDirectory(train_repository, config, module, &*reference);
        !s.ok()) {
      return Fail(s);
    }
    std::printf("trained in %.1f s, final loss %.4f; wrote %s/%s\n", report->seconds,
                report->final_loss, train_repository.c_str(), train_name.c_str());
    return 0;
  }
  if (*conv) {
    v1::ModelConfig config = BaseConfig(conv_name, conv_options.channels, v1::EPSILON,
                                        DefaultSchedule(v1::NoiseSchedule::SCALED_LINEAR));
    config.add_sample_shape(conv_size);
    config.add_sample_shape(conv_size);
    if (conv_options.classes > 0) {
      config.mutable_conditioning()->set_kind(v1::Conditioning::CLASS_LABEL);
      config.mutable_conditioning()->set_num_classes(conv_options.classes);
    }
    torch::jit::Module module = BuildConvNet(conv_options, conv_seed);
    if (absl::Status s = WriteModelDirectory(conv_repository, config, module); !s.ok()) {
      return Fail(s);
    }
    std::printf("wrote %s/%s (conv net, sample_shape [%lld, %lld, %lld], d = %lld)\n",
                conv_repository.c_str(), conv_name.c_str(),
                static_cast<long long>(conv_options.channels), static_cast<long long>(conv_size),
                static_cast<long long>(conv_size),
                static_cast<long long>(conv_options.channels * conv_size * conv_size));
    return 0;
  }
  if (*experiment) {
    if (experiment_t >= 0) experiment_options.measure.timesteps = {experiment_t};
    auto result = RunToyExperiment(experiment_model, experiment_options);
    if (!result.ok()) return Fail(result.status());
    if (experiment_per_sample) {
      std::printf("seed  copy  dup  d1/d2   n+  flat  kappa_max  kappa_min\n");
      for (const SampleCurvature& s : result->samples) {
        const SpectrumSummary& summary = s.spectra.front().summary;
        std::printf("%4llu  %4s  %3lld  %6.3f  %3lld  %4lld  %9.4f  %9.4f\n",
                    static_cast<unsigned long long>(s.seed), s.truth->is_copy() ? "yes" : "no",
                    static_cast<long long>(s.truth->multiplicity), s.truth->ratio,
                    static_cast<long long>(summary.positive_count),
                    static_cast<long long>(summary.flat_count), summary.max_kappa,
                    summary.min_kappa);
      }
      std::printf("\n");
    }
    std::printf("%s\n%lld samples, sampling + spectra in %.2f s\n", FormatToyTable(*result).c_str(),
                static_cast<long long>(experiment_options.samples),
                result->seconds_sampling_and_curvature);
    return 0;
  }
  return 0;
}

}  // namespace memaudit::toy

int main(int argc, char** argv) { return memaudit::toy::Main(argc, argv); }
