// memaudit-bench-sd: a Stable-Diffusion-shaped workload through the engine
// (core/ only: no gRPC), for scripts/gpu_check.sh and docs/PERFORMANCE.md.
//
//   memaudit-bench-sd --model DIR [--device cuda|cpu] [--dtype float32|float16|bfloat16]
//                     [--prompts 8] [--samples 4] [--steps 50] [--guidance 7.5]
//                     [--steps-offset 1] [-k 24] [--method auto|arnoldi] [--threads 0]
//                     [--audit-budget-seconds 0] [--compare-cpu]
//
// DIR is a text-to-image model directory (bench/sd_shaped.py writes one:
// latents 4×64×64, a CLIP-shaped text encoder with 77×768 embeddings, the
// scaled-linear schedule). Phases, each timed on its own (CUDA synchronized
// before every clock read):
//   load       LoadModel with its probe
//   forward    one guided denoiser call (a conditional and a null row), mean
//              of 10 after 2 warm-up calls
//   spectrum   one sample: DDIM sampling with guidance, then the Arnoldi
//              spectrum (k eigenvalues) at the default evaluation point
//   early      first-step early metrics of every prompt (--samples seeds each)
//   audit      every prompt × --samples: sampling and spectra, the default
//              verdicts counted (the prompts done so far when
//              --audit-budget-seconds runs out)
// then the device's peak allocated memory (CUDA) and, for verification on
// a GPU, the largest |λ| difference between this run's spectrum and the same
// sample measured on the CPU in float32 when --compare-cpu is given.
// Output: one "phase seconds detail" line per phase, and the same figures as
// one JSON object on the last line.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <complex>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/audit/sample_curvature.h"
#include "core/checkpoint/load_model.h"
#include "core/checkpoint/text_encoder.h"
#include "core/device/device_memory.h"
#include "core/early/early_metrics.h"
#include "core/model/denoiser.h"
#include "core/runtime/torch_runtime.h"
#include "core/verdict/verdict.h"

#ifdef MEMAUDIT_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace memaudit {
namespace {

int Fail(const std::string& what, const absl::Status& status) {
  std::fprintf(stderr, "memaudit-bench-sd: %s: %s\n", what.c_str(),
               std::string(status.message()).c_str());
  return 1;
}

void Synchronize(const at::Device& device) {
#ifdef MEMAUDIT_WITH_CUDA
  if (device.is_cuda()) c10::cuda::device_synchronize();
#endif
}

// Seconds since `start`, after the device finished its queued work.
double Since(std::chrono::steady_clock::time_point start, const at::Device& device) {
  Synchronize(device);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::vector<std::string> Prompts(int count) {
  // Caption-like prompts of varied length (none is in any training set).
  const std::vector<std::string> base = {
      "a photograph of an astronaut riding a horse on the moon, highly detailed",
      "an oil painting of a lighthouse in a storm",
      "a bowl of ramen, studio lighting, 4k",
      "portrait of an old fisherman, charcoal sketch",
      "a futuristic city at night with neon signs and rain",
      "a red fox in a snowy forest",
      "watercolor of a sailing boat at sunset",
      "a cat wearing sunglasses, digital art",
  };
  std::vector<std::string> prompts;
  for (int i = 0; i < count; ++i) {
    prompts.push_back(i < static_cast<int>(base.size())
                          ? base[i]
                          : base[i % base.size()] + ", variation " + std::to_string(i));
  }
  return prompts;
}

int Main(int argc, char** argv) {
  CLI::App app{"memaudit-bench-sd: an SD-shaped workload through the engine"};
  std::string model_dir, device = "cpu", dtype;
  int prompt_count = 8, samples = 4, steps = 50, k = 24, threads = 0, steps_offset = 1;
  double guidance = 7.5;
  bool compare_cpu = false;
  std::string method = "auto";
  double audit_budget = 0;
  app.add_option("--model", model_dir, "text-to-image model directory")->required();
  app.add_option("--device", device)->capture_default_str();
  app.add_option("--dtype", dtype, "networks' precision (default: as saved)");
  app.add_option("--prompts", prompt_count)->capture_default_str();
  app.add_option("--samples", samples, "samples per prompt")->capture_default_str();
  app.add_option("--steps", steps)->capture_default_str();
  app.add_option("--guidance", guidance)->capture_default_str();
  app.add_option("--steps-offset", steps_offset)->capture_default_str();
  app.add_option("-k", k, "Arnoldi eigenvalues")->capture_default_str();
  app.add_option("--threads", threads, "intra-op threads (0: all cores)");
  app.add_option("--method", method, "spectrum: auto (dense up to d = 4096) | arnoldi")
      ->check(CLI::IsMember({"auto", "arnoldi"}))
      ->capture_default_str();
  app.add_option("--audit-budget-seconds", audit_budget,
                 "stop the audit after the prompt that ends past this (0: no limit)")
      ->capture_default_str();
  app.add_flag("--compare-cpu", compare_cpu,
               "also measure the spectrum sample on the CPU in float32 and report the difference");
  CLI11_PARSE(app, argc, argv);
  ConfigureTorchRuntime(threads);

  CheckpointOptions checkpoint_options;
  checkpoint_options.device = device;
  auto parsed_dtype = ParseDtype(dtype);
  if (!parsed_dtype.ok()) return Fail("--dtype", parsed_dtype.status());
  checkpoint_options.dtype = *parsed_dtype;
  nlohmann::json report;
  std::map<std::string, double> seconds;

  auto start = std::chrono::steady_clock::now();
  auto checkpoint = LoadModel(model_dir, checkpoint_options);
  if (!checkpoint.ok()) return Fail("load", checkpoint.status());
  const at::Device on = (*checkpoint)->device();
  seconds["load"] = Since(start, on);
  auto progress = [&](const char* phase) {
    std::fprintf(stderr, "memaudit-bench-sd: %s %.2f s\n", phase, seconds[phase]);
  };
  progress("load");
  const TextEncoder* encoder = (*checkpoint)->text_encoder();
  if (encoder == nullptr) return Fail("model", absl::InvalidArgumentError("no text encoder"));
  const int64_t d = (*checkpoint)->sample_numel();
  report["model"] = (*checkpoint)->config().name();
  report["device"] = on.str();
  report["network_dtype"] = DtypeName((*checkpoint)->network_dtype());
  report["dimension"] = d;
  std::printf("model %s on %s, networks in %s, d = %lld\n", model_dir.c_str(), on.str().c_str(),
              DtypeName((*checkpoint)->network_dtype()).c_str(), static_cast<long long>(d));

  const std::vector<std::string> prompts = Prompts(prompt_count);
  auto embeddings = encoder->Encode(prompts);
  if (!embeddings.ok()) return Fail("encode", embeddings.status());
  Denoiser denoiser(*checkpoint);

  SampleCurvatureOptions options;
  options.sampler.num_steps = steps;
  options.sampler.guidance = guidance;
  options.sampler.steps_offset = steps_offset;
  options.arnoldi.num_eigenvalues = k;
  if (method == "arnoldi") options.method = SpectrumMethod::kArnoldi;
  const ResolvedPolicy policy = ResolvePolicy((*checkpoint)->config().verdict_policy(), nullptr);
  auto rows_of = [&](int64_t prompt, int64_t count) {
    std::vector<int64_t> repeat(embeddings->dim(), 1);
    repeat[0] = count;
    return embeddings->narrow(0, prompt, 1).repeat(repeat);
  };

  {  // One guided call: the conditional row and the null row.
    auto prepared = denoiser.PrepareConditions(rows_of(0, 1), 1);
    if (!prepared.ok()) return Fail("conditions", prepared.status());
    at::Tensor x = at::randn((*checkpoint)->BatchShape(1),
                             at::TensorOptions().device(on).dtype((*checkpoint)->dtype()));
    c10::NoGradGuard no_grad;
    const at::Tensor t = at::full({1}, 500, at::TensorOptions().device(on).dtype(at::kLong));
    for (int i = 0; i < 2; ++i) (void)denoiser.GuidedEpsilon(x, t, *prepared, guidance);
    start = std::chrono::steady_clock::now();
    constexpr int kCalls = 10;
    for (int i = 0; i < kCalls; ++i) (void)denoiser.GuidedEpsilon(x, t, *prepared, guidance);
    seconds["forward"] = Since(start, on) / kCalls;
    progress("forward");
  }

  start = std::chrono::steady_clock::now();
  auto one = MeasureSamples(denoiser, {1000}, rows_of(0, 1), options, nullptr);
  if (!one.ok()) return Fail("spectrum", one.status());
  seconds["spectrum"] = Since(start, on);
  progress("spectrum");
  const Spectrum& spectrum = one->front().spectra.front();
  report["spectrum"] = {{"k", k},
                        {"t", spectrum.t},
                        {"sigma", spectrum.sigma},
                        {"matvecs", spectrum.matvecs},
                        {"converged", spectrum.converged},
                        {"max_kappa", spectrum.summary.max_kappa},
                        {"positive", spectrum.summary.positive_count}};

  start = std::chrono::steady_clock::now();
  EarlyMetricOptions early;
  early.sampler = options.sampler;
  std::vector<uint64_t> seeds(samples);
  for (int i = 0; i < samples; ++i) seeds[i] = 2000 + static_cast<uint64_t>(i);
  for (int p = 0; p < prompt_count; ++p) {
    auto metrics = ComputeEarlyMetrics(denoiser, seeds, rows_of(p, samples), early);
    if (!metrics.ok()) return Fail("early", metrics.status());
  }
  seconds["early"] = Since(start, on);
  progress("early");

  start = std::chrono::steady_clock::now();
  std::map<std::string, int> verdicts;
  for (int p = 0; p < prompt_count; ++p) {
    auto measured = MeasureSamples(denoiser, seeds, rows_of(p, samples), options, nullptr);
    if (!measured.ok()) return Fail("audit", measured.status());
    for (const SampleCurvature& sample : *measured) {
      ++verdicts[VerdictName(JudgeSample(sample.spectra.front().summary, policy))];
    }
    const double elapsed = Since(start, on);
    std::fprintf(stderr, "audit: prompt %d/%d done (%.1f s)\n", p + 1, prompt_count, elapsed);
    report["audit_prompts_done"] = p + 1;
    if (audit_budget > 0 && elapsed > audit_budget) break;
  }
  seconds["audit"] = Since(start, on);
  progress("audit");
  report["audit_verdicts"] = verdicts;
  report["audit_samples_per_prompt"] = samples;

  if (on.is_cuda()) {
    auto memory = QueryCudaMemory(on);
    if (memory.ok()) report["peak_allocated_mib"] = memory->peak_allocated / (1024.0 * 1024.0);
  }
  if (compare_cpu) {
    CheckpointOptions on_cpu;
    on_cpu.device = "cpu";
    on_cpu.dtype = at::kFloat;
    auto cpu = LoadModel(model_dir, on_cpu);
    if (!cpu.ok()) return Fail("cpu load", cpu.status());
    auto reference = MeasureSamples(Denoiser(*cpu), {1000}, rows_of(0, 1).cpu(), options, nullptr);
    if (!reference.ok()) return Fail("cpu spectrum", reference.status());
    const Spectrum& other = reference->front().spectra.front();
    double scale = 0, worst = 0;
    for (size_t i = 0; i < other.eigenvalues.size() && i < spectrum.eigenvalues.size(); ++i) {
      scale = std::max(scale, std::abs(other.eigenvalues[i]));
      worst = std::max(worst, std::abs(other.eigenvalues[i] - spectrum.eigenvalues[i]));
    }
    report["cpu_float32_max_eigenvalue_difference"] = scale > 0 ? worst / scale : worst;
  }

  report["seconds"] = seconds;
  for (const auto& [phase, value] : seconds) std::printf("%-9s %9.3f s\n", phase.c_str(), value);
  std::printf("%s\n", report.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace memaudit

int main(int argc, char** argv) { return memaudit::Main(argc, argv); }
