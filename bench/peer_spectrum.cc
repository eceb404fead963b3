// Benchmark: memaudit's spectrum against the Python peer a researcher would
// write, on the same checkpoint and the same points, in one run. Checks that
// the eigenvalues agree (sorted, relative to max|λ|) and reports the
// wall-time ratio per spectrum.
//   --method dense    bench/peer_spectrum.py: torch.autograd.functional.jacobian
//                     (vectorize=True), then torch.linalg.eigvals
//   --method arnoldi  bench/peer_arnoldi.py: scipy's ARPACK (eigs) over a
//                     LinearOperator of JVPs, the same k, target (largest
//                     real part), tolerance and subspace size; also the
//                     product counts (--compare-jvp: memaudit by JVPs too)
//   --method early    bench/peer_early.py: the early metrics (Wen and Jeon for
//                     a conditional model, ‖s‖², ‖Hs‖² and Hutchinson tr H for
//                     an unconditional one) of --conditions conditions, n =
//                     --generations each, over the first K = --steps steps,
//                     from the same x_T (and Hutchinson probes) saved here;
//                     checks the per-condition means agree (relative) and
//                     reports conditions per second (--batched: also with all
//                     conditions in one ComputeEarlyMetrics call); for a
//                     conditional model also the anisotropy pair, its cost
//                     forward-only (derivative_metrics false) against Jeon's
//                     path and against the peer's own anisotropy loop
//
//   build/bench/memaudit-bench-peer --model checkpoints/mnist39 --label 9 --points 5
//   build/bench/memaudit-bench-peer --model checkpoints/mnist39 --label 9 --points 5
//       --method arnoldi -k 8
//   build/bench/memaudit-bench-peer --model checkpoints/mnist39 --method early
//       --generations 4 --steps 1
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <complex>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>

#include "core/checkpoint/load_model.h"
#include "core/checkpoint/text_encoder.h"
#include "core/early/early_metrics.h"
#include "core/model/sampler.h"
#include "core/runtime/tensor_file.h"
#include "core/runtime/torch_runtime.h"
#include "core/spectra/arnoldi.h"
#include "core/spectra/curvature.h"
#include "core/spectra/spectrum.h"

namespace {

// The command line of a Python peer, with LibTorch's intra-op threads set to
// memaudit's own (Debian's python3-torch defaults to 1 thread here, while
// memaudit uses every core): a comparison at equal threads. The peers print
// "threads N", which the bench checks.
std::string PeerCommand(const std::string& script_and_arguments) {
  return "OMP_NUM_THREADS=" + std::to_string(at::get_num_threads()) + " /usr/bin/python3 " +
         script_and_arguments;
}

// Whether a peer's "threads N" line says it ran with memaudit's threads.
bool SameThreads(int peer_threads) {
  if (peer_threads == at::get_num_threads()) return true;
  std::fprintf(stderr, "the Python peer ran with %d threads, memaudit with %d\n", peer_threads,
               at::get_num_threads());
  return false;
}

using namespace memaudit;

std::vector<std::complex<double>> Sorted(const at::Tensor& values) {
  at::Tensor c = values.to(at::kComplexDouble).contiguous();
  const auto* data = c.data_ptr<c10::complex<double>>();
  std::vector<std::complex<double>> out;
  for (int64_t i = 0; i < c.numel(); ++i) out.emplace_back(data[i].real(), data[i].imag());
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.real() != b.real() ? a.real() > b.real() : a.imag() > b.imag();
  });
  return out;
}

double Median(std::vector<double> values, bool skip_first) {
  if (skip_first && values.size() > 1) values.erase(values.begin());
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct EarlyBench {
  int64_t conditions = 10;  // labels 0, 1, ... (mod num_classes); groups of seeds if unconditional
  int64_t generations = 4;  // n
  int64_t steps = 1;        // K
  int64_t probes = EarlyMetricOptions{}.hutchinson_probes;
  int64_t num_steps = SamplerOptions{}.num_steps;
  bool batched = false;  // also: all conditions in one ComputeEarlyMetrics call
  // Text-to-image models: the conditions are these prompts (one per line,
  // the first `conditions`), encoded by the model's text encoder.
  std::string prompts;
};

// --method early: memaudit's ComputeEarlyMetrics per condition against
// bench/peer_early.py on the same x_T (and probes). Condition i has label
// i % num_classes and seeds i·n .. i·n + n − 1.
int RunEarly(const std::string& model_dir, const std::string& work, double guidance,
             const EarlyBench& bench) {
  std::atomic<int64_t> calls{0}, rows{0};
  CheckpointOptions checkpoint_options;
  checkpoint_options.forward_observer = [&](int64_t batch_rows, bool) {
    ++calls;
    rows += batch_rows;
  };
  auto checkpoint = LoadModel(model_dir, checkpoint_options);
  if (!checkpoint.ok()) {
    std::fprintf(stderr, "%s\n", std::string(checkpoint.status().message()).c_str());
    return 1;
  }
  Denoiser denoiser(*checkpoint);
  const bool conditional = (*checkpoint)->conditional();
  const int64_t n = bench.generations, count = bench.conditions;
  const int64_t classes = (*checkpoint)->config().conditioning().num_classes();
  std::vector<int64_t> sample_shape((*checkpoint)->config().sample_shape().begin(),
                                    (*checkpoint)->config().sample_shape().end());
  EarlyMetricOptions options;
  options.sampler.guidance = guidance;
  options.sampler.num_steps = bench.num_steps;
  options.steps = bench.steps;
  options.hutchinson_probes = bench.probes;

  // The inputs the peer gets: x_T as the sampler draws it (one CPU generator
  // per seed), the labels, and the probes ComputeEarlyMetrics draws (one
  // generator seeded probe_seed, per step [n·P, *sample_shape]).
  std::vector<std::vector<uint64_t>> seeds(count);
  std::vector<at::Tensor> labels, noise;
  for (int64_t i = 0; i < count; ++i) {
    std::vector<at::Tensor> rows_of_condition;
    for (int64_t j = 0; j < n; ++j) {
      seeds[i].push_back(static_cast<uint64_t>(i * n + j));
      at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seeds[i].back());
      rows_of_condition.push_back(at::randn(sample_shape, generator, at::kFloat));
    }
    noise.push_back(at::stack(rows_of_condition).to((*checkpoint)->dtype()));
    labels.push_back(conditional ? at::full({n}, i % std::max<int64_t>(classes, 1), at::kLong)
                                 : at::Tensor());
  }
  // Prompts: each condition is a prompt's embedding, repeated n times; the
  // peer gets [C + 1, *embedding] with the null condition last.
  at::Tensor peer_labels = at::arange(count, at::kLong).remainder(std::max<int64_t>(classes, 1));
  if (!bench.prompts.empty()) {
    const TextEncoder* encoder = (*checkpoint)->text_encoder();
    std::ifstream in(bench.prompts);
    std::vector<std::string> prompts;
    for (std::string line;
         std::getline(in, line) && static_cast<int64_t>(prompts.size()) < count;) {
      if (!line.empty()) prompts.push_back(line);
    }
    if (encoder == nullptr || static_cast<int64_t>(prompts.size()) < count) {
      std::fprintf(stderr, "--prompts: needs a text encoder and %lld prompts\n",
                   static_cast<long long>(count));
      return 1;
    }
    auto encoded = encoder->Encode(prompts);
    if (!encoded.ok()) return 1;
    for (int64_t i = 0; i < count; ++i) {
      std::vector<int64_t> repeat(encoded->dim(), 1);
      repeat[0] = n;
      labels[i] = encoded->narrow(0, i, 1).repeat(repeat);
    }
    peer_labels = at::cat({*encoded, (*checkpoint)->NullCondition(1).to(encoded->dtype())});
  }
  std::vector<int64_t> probe_shape{n * bench.probes};
  probe_shape.insert(probe_shape.end(), sample_shape.begin(), sample_shape.end());
  at::Generator probe_generator = at::make_generator<at::CPUGeneratorImpl>(options.probe_seed);
  std::vector<at::Tensor> probes;
  for (int64_t k = 0; k < bench.steps && !conditional; ++k) {
    probes.push_back((at::randint(2, probe_shape, probe_generator, at::kFloat) * 2 - 1)
                         .to((*checkpoint)->dtype()));
  }
  // The saved x_T is the sampler's (a check of the reproduction above).
  {
    SamplerOptions one = options.sampler;
    one.stop_after_steps = 1;
    auto trajectory = SampleTrajectories(denoiser, seeds[0], labels[0], one);
    if (!trajectory.ok() || !at::equal(trajectory->states[0], noise[0])) {
      std::fprintf(stderr, "x_T does not match the sampler's initial noise\n");
      return 1;
    }
  }
  const std::string xt_path = work + "/early_xt.pt", labels_path = work + "/early_labels.pt",
                    probes_path = work + "/early_probes.pt", peer_path = work + "/early_peer.pt";
  if (!SaveTensorFile(xt_path, at::stack(noise)).ok() ||
      !SaveTensorFile(labels_path, peer_labels.to(at::kCPU)).ok() ||
      (!conditional && !SaveTensorFile(probes_path, at::stack(probes)).ok())) {
    return 1;
  }

  // memaudit, condition by condition (as the EarlyMetrics RPC runs them);
  // then the sampler alone over the same K steps, for the breakdown.
  std::vector<double> seconds, sampler_seconds;
  std::vector<at::Tensor> ours;  // [M, n] per condition
  std::vector<int64_t> timesteps;
  calls = 0;
  rows = 0;
  for (int64_t i = 0; i < count; ++i) {
    const auto start = std::chrono::steady_clock::now();
    auto metrics = ComputeEarlyMetrics(denoiser, seeds[i], labels[i], options);
    seconds.push_back(SecondsSince(start));
    if (!metrics.ok()) {
      std::fprintf(stderr, "%s\n", std::string(metrics.status().message()).c_str());
      return 1;
    }
    timesteps = metrics->timesteps;
    std::vector<at::Tensor> values;
    if (conditional) {
      values = {at::tensor(metrics->wen, at::kDouble), at::tensor(metrics->jeon, at::kDouble),
                at::tensor(metrics->anisotropy_norm, at::kDouble),
                at::tensor(metrics->anisotropy_alignment, at::kDouble)};
    } else {
      values = {at::tensor(metrics->score_norm_squared, at::kDouble),
                at::tensor(metrics->hessian_score_squared, at::kDouble),
                at::tensor(metrics->hutchinson_trace, at::kDouble)};
    }
    ours.push_back(at::stack(values));
  }
  const double memaudit_calls = static_cast<double>(calls) / count;
  const double memaudit_rows = static_cast<double>(rows) / count;
  // The anisotropy alone, forward passes only (what a label-free screen by
  // it runs): two calls of 2n rows at K = 1.
  std::vector<double> forward_seconds;
  double forward_calls = 0, forward_rows = 0;
  if (conditional) {
    EarlyMetricOptions forward = options;
    forward.derivative_metrics = false;
    forward.steps = 1;
    calls = 0;
    rows = 0;
    for (int64_t i = 0; i < count; ++i) {
      const auto start = std::chrono::steady_clock::now();
      auto metrics = ComputeEarlyMetrics(denoiser, seeds[i], labels[i], forward);
      forward_seconds.push_back(SecondsSince(start));
      if (!metrics.ok()) return 1;
    }
    forward_calls = static_cast<double>(calls) / count;
    forward_rows = static_cast<double>(rows) / count;
  }
  for (int64_t i = 0; i < count; ++i) {
    SamplerOptions sampler = options.sampler;
    sampler.stop_after_steps = options.steps;
    const auto start = std::chrono::steady_clock::now();
    if (!SampleTrajectories(denoiser, seeds[i], labels[i], sampler).ok()) return 1;
    sampler_seconds.push_back(SecondsSince(start));
  }
  // All conditions in one call (as calibration batches them): C·n rows per
  // network call. Median of 3 runs after a warm-up. Its Hutchinson probes
  // are drawn for the whole batch, so only the deterministic metrics are
  // compared with the peer.
  double batched_seconds = -1;
  at::Tensor batched_values;  // [C, M', n]
  if (bench.batched) {
    std::vector<uint64_t> all_seeds;
    for (const auto& group : seeds) all_seeds.insert(all_seeds.end(), group.begin(), group.end());
    const at::Tensor all_labels = conditional ? at::cat(labels) : at::Tensor();
    std::vector<double> runs;
    for (int repeat = 0; repeat < 4; ++repeat) {
      const auto start = std::chrono::steady_clock::now();
      auto metrics = ComputeEarlyMetrics(denoiser, all_seeds, all_labels, options);
      runs.push_back(SecondsSince(start) / static_cast<double>(count));
      if (!metrics.ok()) return 1;
      const std::vector<double>& a = conditional ? metrics->wen : metrics->score_norm_squared;
      const std::vector<double>& b = conditional ? metrics->jeon : metrics->hessian_score_squared;
      batched_values = at::stack({at::tensor(a, at::kDouble), at::tensor(b, at::kDouble)})
                           .view({2, count, n})
                           .transpose(0, 1);
    }
    batched_seconds = Median(runs, true);
  }
  const double memaudit_seconds = Median(seconds, true);
  const double trajectory_seconds = Median(sampler_seconds, true);

  // The peer, same inputs, same run.
  const std::string command = PeerCommand(
      "bench/peer_early.py " + model_dir + " " + xt_path + " " + labels_path + " " +
      (conditional ? std::string("-") : probes_path) + " " + std::to_string(bench.steps) + " " +
      std::to_string(bench.num_steps) + " " + std::to_string(guidance) + " " + peer_path);
  FILE* pipe = popen(command.c_str(), "r");
  char line[1024] = {0};
  double peer_seconds = -1, peer_calls = -1, peer_rows = -1, peer_anisotropy_seconds = -1;
  int peer_threads = -1;
  char peer_jvp[64] = "";
  std::string peer_timesteps;
  while (pipe && fgets(line, sizeof(line), pipe)) {
    std::sscanf(line, "seconds_per_condition %lf", &peer_seconds);
    std::sscanf(line, "anisotropy_seconds_per_condition %lf", &peer_anisotropy_seconds);
    std::sscanf(line, "calls_per_condition %lf rows_per_condition %lf", &peer_calls, &peer_rows);
    std::sscanf(line, "threads %d", &peer_threads);
    std::sscanf(line, "jvp %63s", peer_jvp);
    if (std::string(line).rfind("timesteps ", 0) == 0) peer_timesteps = std::string(line + 10);
  }
  if (!pipe || pclose(pipe) != 0 || peer_seconds < 0 || !SameThreads(peer_threads)) {
    std::fprintf(stderr, "the Python peer failed: %s\n", command.c_str());
    return 1;
  }
  auto peer = LoadTensorFile(peer_path);
  if (!peer.ok()) return 1;
  at::Tensor mine = at::stack(ours);  // [C, M, n]
  if (!SaveTensorFile(work + "/early_ours.pt", mine).ok()) return 1;
  // Relative difference of each metric's per-condition mean (over the n
  // generations), and of the per-generation values; worst over conditions.
  // The alignment is a cosine: its difference is absolute (relative to 1).
  const std::vector<const char*> names =
      conditional ? std::vector<const char*>{"wen", "jeon", "anisotropy_norm",
                                             "anisotropy_alignment (abs.)"}
                  : std::vector<const char*>{"score_norm_squared", "hessian_score_squared",
                                             "hutchinson_trace"};
  if (peer->size(1) != static_cast<int64_t>(names.size())) {
    std::fprintf(stderr, "the peer wrote %lld metrics, expected %zu\n",
                 static_cast<long long>(peer->size(1)), names.size());
    return 1;
  }
  std::vector<double> absolute(names.size(), 0.0);  // 1: compare absolutely
  if (conditional) absolute[3] = 1.0;
  const at::Tensor is_absolute = at::tensor(absolute, at::kDouble).gt(0.5);
  at::Tensor mean_ours = mine.mean(2), mean_peer = peer->mean(2);
  at::Tensor mean_scale =
      at::where(is_absolute.view({1, -1}), at::ones_like(mean_peer), mean_peer.abs());
  at::Tensor relative = ((mean_ours - mean_peer).abs() / mean_scale).amax(0);
  at::Tensor sample_scale =
      at::where(is_absolute.view({1, -1, 1}), at::ones_like(*peer), peer->abs());
  at::Tensor per_sample = ((mine - *peer).abs() / sample_scale).amax({0, 2});
  double worst = 0;
  std::string timestep_text;
  for (int64_t t : timesteps) timestep_text += std::to_string(t) + " ";
  std::printf(
      "model %s (%s), d = %lld, %lld conditions, n = %lld, K = %lld (t = %s), "
      "guidance %g, %s%lld threads\n",
      model_dir.c_str(), conditional ? "conditional" : "unconditional",
      static_cast<long long>((*checkpoint)->sample_numel()), static_cast<long long>(count),
      static_cast<long long>(n), static_cast<long long>(bench.steps), timestep_text.c_str(),
      guidance, conditional ? "" : ("probes " + std::to_string(bench.probes) + ", ").c_str(),
      static_cast<long long>(at::get_num_threads()));
  std::printf("peer timesteps: %s", peer_timesteps.c_str());
  for (size_t m = 0; m < names.size(); ++m) {
    const double r = relative[m].item<double>();
    worst = std::max(worst, r);
    std::printf(
        "%-22s per-condition mean: max rel. diff %.2e; per generation %.2e; "
        "condition 0: memaudit %.6g, peer %.6g\n",
        names[m], r, per_sample[m].item<double>(), mean_ours[0][m].item<double>(),
        mean_peer[0][m].item<double>());
  }
  std::printf("agreement: %.2e (%s 1e-4)\n", worst, worst <= 1e-4 ? "within" : "NOT within");
  std::printf(
      "network calls per condition: memaudit %.0f (%.0f rows), peer %.0f (%.0f rows); "
      "peer JVP: %s\n",
      memaudit_calls, memaudit_rows, peer_calls, peer_rows, peer_jvp);
  std::printf("memaudit early metrics : %.4f s per condition = %.2f conditions/s (median)\n",
              memaudit_seconds, 1.0 / memaudit_seconds);
  std::printf("  of which the K-step trajectory (SampleTrajectories alone): %.4f s\n",
              trajectory_seconds);
  std::printf("Python peer            : %.4f s per condition = %.2f conditions/s (median)\n",
              peer_seconds, 1.0 / peer_seconds);
  std::printf("memaudit / peer (time) : %.2f\n", memaudit_seconds / peer_seconds);
  if (conditional) {
    const double anisotropy_seconds = Median(forward_seconds, true);
    std::printf(
        "anisotropy, forward-only (%.0f call(s), %.0f rows per condition): memaudit %.4f s per "
        "condition, peer %.4f s (/ peer: %.2f)\n",
        forward_calls, forward_rows, anisotropy_seconds, peer_anisotropy_seconds,
        anisotropy_seconds / peer_anisotropy_seconds);
    std::printf(
        "anisotropy / Jeon's path (time): memaudit %.2f (of its own Wen+Jeon %.4f s), peer "
        "%.2f (of its own %.4f s)\n",
        anisotropy_seconds / memaudit_seconds, memaudit_seconds,
        peer_anisotropy_seconds / peer_seconds, peer_seconds);
  }
  if (bench.batched) {
    at::Tensor peer_two = peer->narrow(1, 0, 2);
    const double batched_agreement =
        ((batched_values.mean(2) - peer_two.mean(2)).abs() / peer_two.mean(2).abs())
            .max()
            .item<double>();
    std::printf(
        "memaudit, all %lld conditions in one call: %.4f s per condition = %.2f "
        "conditions/s (median of 3); %s and %s agree with the peer to %.2e; "
        "/ peer: %.2f\n",
        static_cast<long long>(count), batched_seconds, 1.0 / batched_seconds, names[0], names[1],
        batched_agreement, batched_seconds / peer_seconds);
  }

  return worst <= 1e-4 ? 0 : 2;
}

// For each eigenvalue of `found[i]`, the distance to the nearest of `all[i]`
// relative to max|λ| of `all[i]`, conjugates folded (either half of a pair
// is right), over all points i.
std::vector<double> NearestDistances(const std::vector<at::Tensor>& found,
                                     const std::vector<at::Tensor>& all) {
  std::vector<double> distances;
  for (size_t i = 0; i < found.size(); ++i) {
    auto a = Sorted(found[i]), b = Sorted(all[i]);
    double scale = 0;
    for (const auto& v : b) scale = std::max(scale, std::abs(v));
    for (const auto& u : a) {
      double best = std::numeric_limits<double>::infinity();
      for (const auto& v : b) {
        best = std::min(best, std::abs(std::complex<double>(u.real(), std::abs(u.imag())) -
                                       std::complex<double>(v.real(), std::abs(v.imag()))));
      }
      distances.push_back(best / scale);
    }
  }
  return distances;
}

// This process's peak resident set (VmHWM), KiB; -1 if unreadable.
int64_t PeakResidentKiB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    long long kib = 0;
    if (std::sscanf(line.c_str(), "VmHWM: %lld kB", &kib) == 1) return kib;
  }
  return -1;
}

// Prints how many of `ours`' eigenvalues have one of `theirs` within 1e-3 of
// max|λ| (per point, conjugates folded: either half of a pair is right), and
// the largest difference among those. Where two solvers' k-windows differ at
// a cluster's edge, this says whether the eigenvalues both found agree.
void PrintSetAgreement(const std::vector<at::Tensor>& ours, const std::vector<at::Tensor>& theirs) {
  const std::vector<double> distances = NearestDistances(ours, theirs);
  int64_t matched = 0;
  double worst = 0;
  for (double distance : distances) {
    if (distance <= 1e-3) {
      ++matched;
      worst = std::max(worst, distance);
    }
  }
  std::printf("%lld of %zu within 1e-3, the largest difference among them %.2e\n",
              static_cast<long long>(matched), distances.size(), worst);
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir = "checkpoints/mnist39", work = "/tmp/memaudit-bench-peer";
  int64_t label = 9, points = 5, t = 20;
  double guidance = 5.0;
  int threads = 0;
  int64_t chunk_rows = JacobianOptions{}.chunk_rows;
  std::string method = "dense";
  ArnoldiOptions arnoldi;
  CLI::App app{"memaudit dense spectrum vs the Python peer"};
  app.add_option("--model", model_dir)->capture_default_str();
  app.add_option("--label", label)->capture_default_str();
  app.add_option("--points", points)->capture_default_str();
  app.add_option("--t", t)->capture_default_str();
  app.add_option("--guidance", guidance)->capture_default_str();
  app.add_option("--threads", threads)->capture_default_str();
  app.add_option("--work", work)->capture_default_str();
  app.add_option("--chunk-rows", chunk_rows, "Jacobian rows per network call")
      ->capture_default_str();
  app.add_option("--method", method, "dense | arnoldi | early")
      ->check(CLI::IsMember({"dense", "arnoldi", "early"}))
      ->capture_default_str();
  app.add_option("-k,--eigenvalues", arnoldi.num_eigenvalues, "arnoldi: k")->capture_default_str();
  app.add_option("--tolerance", arnoldi.tolerance, "arnoldi: relative tolerance")
      ->capture_default_str();
  app.add_option("--arnoldi-seed", arnoldi.seed, "arnoldi: memaudit's random start")
      ->capture_default_str();
  app.add_option("--subspace", arnoldi.subspace,
                 "arnoldi: memaudit's Krylov subspace size (0: default)")
      ->capture_default_str();
  int64_t peer_subspace = 0;
  app.add_option("--peer-subspace", peer_subspace,
                 "arnoldi: the peer's ncv (0: max(2k + 1, k + 16), ARPACK's customary size)")
      ->capture_default_str();
  bool check_dense = false;
  app.add_flag("--check-dense", check_dense,
               "arnoldi: also compare every eigenvalue found with memaudit's dense spectrum "
               "(d <= 4,096)");
  bool compare_jvp = false;
  app.add_flag("--compare-jvp", compare_jvp,
               "arnoldi: also time memaudit as before (JVPs, subspace max(2k + 1, k + 16))");
  EarlyBench early;
  app.add_option("--conditions", early.conditions, "early: conditions (labels 0, 1, ...)")
      ->capture_default_str();
  app.add_option("-n,--generations", early.generations, "early: generations per condition")
      ->capture_default_str();
  app.add_option("--steps", early.steps, "early: K, the first sampling steps")
      ->capture_default_str();
  app.add_option("--probes", early.probes, "early: Hutchinson probes")->capture_default_str();
  app.add_option("--num-steps", early.num_steps, "early: sampling steps of the schedule")
      ->capture_default_str();
  app.add_flag("--batched", early.batched,
               "early: also time all conditions in one ComputeEarlyMetrics call");
  app.add_option("--prompts", early.prompts,
                 "early, text-to-image models: file of prompts, one per line (the conditions)");
  CLI11_PARSE(app, argc, argv);
  if (method == "early") {
    ConfigureTorchRuntime(threads);
    std::filesystem::create_directories(work);
    return RunEarly(model_dir, work, guidance, early);
  }
  const bool dense = method == "dense";
  ConfigureTorchRuntime(threads);
  std::filesystem::create_directories(work);

  auto checkpoint = LoadModel(model_dir);
  if (!checkpoint.ok()) {
    std::fprintf(stderr, "%s\n", std::string(checkpoint.status().message()).c_str());
    return 1;
  }
  Denoiser denoiser(*checkpoint);
  // The points: states at t on guided trajectories of seeds 0..points-1.
  std::vector<uint64_t> seeds(points);
  for (int64_t i = 0; i < points; ++i) seeds[i] = static_cast<uint64_t>(i);
  SamplerOptions sampler;
  sampler.guidance = guidance;
  // An unconditional model takes no labels (the peer is told label -1).
  if (!(*checkpoint)->conditional()) label = -1;
  at::Tensor labels = label < 0 ? at::Tensor() : at::full({points}, label, at::kLong);
  auto trajectory = SampleTrajectories(denoiser, seeds, labels, sampler);
  if (!trajectory.ok()) return 1;
  auto x = StateAtTimestep(denoiser, *trajectory, t, labels, guidance);
  if (!x.ok()) return 1;
  const std::string points_path = work + "/points.pt", peer_path = work + "/peer.pt";
  if (!SaveTensorFile(points_path, *x).ok()) return 1;

  // memaudit: one spectrum per point, timed (the first warms up).
  auto field = denoiser.ScoreField(t, ScoreKind::kConditional, labels);
  struct Run {
    double seconds = 0;  // median per spectrum
    double matvecs = 0;  // median per spectrum (arnoldi)
    std::vector<at::Tensor> eigenvalues;
  };
  auto run_memaudit = [&](const ArnoldiOptions& options) -> absl::StatusOr<Run> {
    std::vector<double> seconds, matvecs;
    Run run;
    for (int64_t i = 0; i < points; ++i) {
      const auto start = std::chrono::steady_clock::now();
      std::vector<std::complex<double>> eigenvalues;
      if (dense) {
        JacobianOptions jacobian_options;
        jacobian_options.chunk_rows = chunk_rows;
        auto jacobian = DenseJacobians(*field, x->narrow(0, i, 1), at::full({1}, i, at::kLong),
                                       jacobian_options);
        if (!jacobian.ok()) return jacobian.status();
        auto spectra = DenseSpectra(*jacobian, t, denoiser.schedule());
        if (!spectra.ok()) return spectra.status();
        eigenvalues = spectra->front().eigenvalues;
      } else {
        auto result =
            ArnoldiEigenvalues(*field, x->narrow(0, i, 1), at::full({1}, i, at::kLong), options);
        if (!result.ok()) return result.status();
        eigenvalues = result->eigenvalues;
        matvecs.push_back(static_cast<double>(result->matvecs));
      }
      seconds.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      if (!dense) {
        std::printf("  memaudit point %lld: %.3f s, %.0f products, %zu eigenvalues\n",
                    static_cast<long long>(i), seconds.back(), matvecs.back(), eigenvalues.size());
        std::fflush(stdout);
      }
      std::vector<c10::complex<double>> values;
      for (const auto& v : eigenvalues) values.emplace_back(v.real(), v.imag());
      run.eigenvalues.push_back(at::tensor(at::ArrayRef<c10::complex<double>>(values)));
    }
    std::vector<double> timed(seconds.begin() + (points > 1 ? 1 : 0), seconds.end());
    std::sort(timed.begin(), timed.end());
    run.seconds = timed[timed.size() / 2];
    std::sort(matvecs.begin(), matvecs.end());
    if (!matvecs.empty()) run.matvecs = matvecs[matvecs.size() / 2];
    return run;
  };
  auto ours_run = run_memaudit(arnoldi);
  if (!ours_run.ok()) {
    std::fprintf(stderr, "%s\n", std::string(ours_run.status().message()).c_str());
    return 1;
  }
  const std::vector<at::Tensor>& ours = ours_run->eigenvalues;
  const double memaudit_seconds = ours_run->seconds;
  // memaudit's peak resident memory (model, sampling, these spectra), before
  // the other runs and the peer (which runs in its own process).
  const int64_t peak_kib = PeakResidentKiB();
  // --compare-jvp: the same spectra as memaudit computed them before the
  // retained transpose and the 3k subspace (JVPs, subspace max(2k + 1,
  // k + 16)), same points, same k and tolerance, same run.
  std::optional<Run> jvp_run;
  int64_t before_subspace = 0;
  if (!dense && compare_jvp) {
    ArnoldiOptions by_jvp = arnoldi;
    by_jvp.product = ArnoldiProduct::kJvp;
    if (arnoldi.subspace == 0) {
      by_jvp.subspace = std::max(2 * arnoldi.num_eigenvalues + 1, arnoldi.num_eigenvalues + 16);
    }
    before_subspace = ArnoldiSubspace(by_jvp, (*checkpoint)->sample_numel());
    auto run = run_memaudit(by_jvp);
    if (!run.ok()) {
      std::fprintf(stderr, "JVP run: %s\n", std::string(run.status().message()).c_str());
      return 1;
    }
    jvp_run = *std::move(run);
  }

  // --check-dense: each Arnoldi eigenvalue against the dense spectrum of the
  // same point (the whole spectrum, so window edges do not matter).
  double dense_distance = -1;
  if (!dense && check_dense && (*checkpoint)->sample_numel() <= 4096) {
    std::vector<at::Tensor> all;
    for (int64_t i = 0; i < points; ++i) {
      auto jacobian = DenseJacobians(*field, x->narrow(0, i, 1), at::full({1}, i, at::kLong));
      if (!jacobian.ok()) return 1;
      auto spectra = DenseSpectra(*jacobian, t, denoiser.schedule());
      if (!spectra.ok()) return 1;
      std::vector<c10::complex<double>> values;
      for (const auto& v : spectra->front().eigenvalues) values.emplace_back(v.real(), v.imag());
      all.push_back(at::tensor(at::ArrayRef<c10::complex<double>>(values)));
    }
    const std::vector<double> distances = NearestDistances(ours, all);
    dense_distance = distances.empty() ? 0 : *std::max_element(distances.begin(), distances.end());
  }

  // The peer, same points, same run.
  const std::string common_args = model_dir + " " + points_path + " " + std::to_string(t) + " " +
                                  std::to_string(denoiser.schedule().sigma(t)) + " " +
                                  std::to_string(label) + " ";
  const std::string command = dense
                                  ? PeerCommand("bench/peer_spectrum.py " + common_args + peer_path)
                                  : PeerCommand("bench/peer_arnoldi.py " + common_args +
                                                std::to_string(arnoldi.num_eigenvalues) + " " +
                                                std::to_string(arnoldi.tolerance) + " " +
                                                peer_path + " " + std::to_string(peer_subspace));
  FILE* pipe = popen(command.c_str(), "r");
  char line[256] = {0};
  double peer_seconds = -1, peer_matvecs = -1, peer_peak_kib = -1;
  int peer_threads = -1;
  char peer_jvp[64] = "";
  while (pipe && fgets(line, sizeof(line), pipe)) {
    std::sscanf(line, "seconds_per_spectrum %lf", &peer_seconds);
    std::sscanf(line, "matvecs_per_spectrum %lf", &peer_matvecs);
    std::sscanf(line, "jvp %63s", peer_jvp);
    std::sscanf(line, "peak_kib %lf", &peer_peak_kib);
    std::sscanf(line, "threads %d", &peer_threads);
  }
  if (!pipe || pclose(pipe) != 0 || peer_seconds < 0 || !SameThreads(peer_threads)) {
    std::fprintf(stderr, "the Python peer failed: %s\n", command.c_str());
    return 1;
  }
  // Ours next to the peer's, for a closer look: <work>/ours.pt, [points, k].
  // (Arnoldi may return fewer than k for some points: then no file.)
  bool same_count = true;
  for (const at::Tensor& values : ours)
    same_count = same_count && values.numel() == ours[0].numel();
  if (!dense && same_count && !SaveTensorFile(work + "/ours.pt", at::stack(ours)).ok()) return 1;
  auto peer = LoadTensorFile(peer_path);
  if (!peer.ok()) return 1;
  double worst = 0;
  for (int64_t i = 0; i < points; ++i) {
    auto a = Sorted(ours[i]), b = Sorted((*peer)[i]);
    double scale = 0;
    for (const auto& v : b) scale = std::max(scale, std::abs(v));
    if (a.size() != b.size()) {
      std::printf("point %lld: memaudit found %zu eigenvalues, the peer %zu\n",
                  static_cast<long long>(i), a.size(), b.size());
    }
    // The spectrum of a real matrix is closed under conjugation; when the
    // k-th eigenvalue found is half of a pair, either half is right, so the
    // comparison is of real parts and |imaginary| parts.
    for (size_t k = 0; k < std::min(a.size(), b.size()); ++k) {
      const std::complex<double> folded_a(a[k].real(), std::abs(a[k].imag()));
      const std::complex<double> folded_b(b[k].real(), std::abs(b[k].imag()));
      const double difference = std::abs(folded_a - folded_b) / scale;
      if (difference > 1e-3 && difference > worst) {
        std::printf("point %lld, eigenvalue %zu: memaudit %.6f%+.6fi, peer %.6f%+.6fi\n",
                    static_cast<long long>(i), k, a[k].real(), a[k].imag(), b[k].real(),
                    b[k].imag());
      }
      worst = std::max(worst, difference);
    }
  }
  std::printf("model %s, class %lld, t = %lld, %lld points, d = %lld, threads %d\n",
              model_dir.c_str(), static_cast<long long>(label), static_cast<long long>(t),
              static_cast<long long>(points), static_cast<long long>((*checkpoint)->sample_numel()),
              at::get_num_threads());
  std::printf("eigenvalues: max |ours - peer| / max|lambda| = %.2e (%s 1e-3)\n", worst,
              worst <= 1e-3 ? "within" : "NOT within");
  if (!dense) {
    std::printf(
        "arnoldi: k = %lld, largest real part, tolerance %.0e, subspace memaudit %lld, peer %s; "
        "network products per spectrum: memaudit %.0f (%s), peer %.0f (%s JVPs)\n",
        static_cast<long long>(arnoldi.num_eigenvalues), arnoldi.tolerance,
        static_cast<long long>(ArnoldiSubspace(arnoldi, (*checkpoint)->sample_numel())),
        peer_subspace > 0 ? std::to_string(peer_subspace).c_str() : "max(2k + 1, k + 16)",
        ours_run->matvecs,
        arnoldi.product == ArnoldiProduct::kJvp ? "JVPs" : "retained backward passes", peer_matvecs,
        peer_jvp);
    std::printf("eigenvalues found by both (each of memaudit's matched to the peer's nearest): ");
    PrintSetAgreement(ours, peer->unbind(0));
    if (dense_distance >= 0) {
      std::printf(
          "against memaudit's dense spectrum: every eigenvalue found is within %.2e of max|lambda| "
          "of a dense one (%s 1e-4)\n",
          dense_distance, dense_distance <= 1e-4 ? "within" : "NOT within");
    }
    if (jvp_run) {
      std::printf(
          "memaudit as before (JVPs, subspace %lld): %.3f s (median), %.0f JVPs per spectrum; ",
          static_cast<long long>(before_subspace), jvp_run->seconds, jvp_run->matvecs);
      PrintSetAgreement(ours, jvp_run->eigenvalues);
      std::printf("memaudit / memaudit as before: %.2f\n", memaudit_seconds / jvp_run->seconds);
    }
  }
  std::printf("peak resident memory: memaudit %.0f MiB", static_cast<double>(peak_kib) / 1024);
  if (peer_peak_kib > 0) std::printf(", peer %.0f MiB", peer_peak_kib / 1024);
  std::printf("\n");
  std::printf("memaudit %-7s spectrum: %.3f s (median)\n", method.c_str(), memaudit_seconds);
  std::printf("Python peer             : %.3f s (median)\n", peer_seconds);
  std::printf("memaudit / peer         : %.2f\n", memaudit_seconds / peer_seconds);
  return worst <= 1e-3 ? 0 : 2;
}
