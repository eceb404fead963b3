// Benchmark: how few eigenvalues, at which tolerance, a verdict needs
// (issue #13 item 3). Runs the same audit (in-process RunAudit: the
// service's planning, sampling, spectra, truth and verdicts) with the dense
// spectrum and with matrix-free Arnoldi over a grid of k and tolerance,
// and prints per configuration: seconds per spectrum, JVPs per spectrum,
// and how many samples' verdicts, n₊ and flat-count-at-the-top differ from
// the dense run (the reference), with the largest |Δκ_max|. With
// --no-dense (models above the dense limit), the reference is the first
// configuration of the grid.
//
//   build/bench/memaudit-bench-verdict-grade --repository checkpoints --model mnist39
//       --class 0 --class 3 --class 9 --samples 4 --seed 500
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "core/runtime/torch_runtime.h"
#include "server/audit_runner.h"
#include "server/model_registry.h"

namespace {

using namespace memaudit;

struct Config {
  std::string name;
  v1::SpectrumMethod method;
  int64_t k = 0;
  double tolerance = 0;
};

struct Outcome {
  std::vector<v1::SampleReport> samples;
  double seconds = 0;  // curvature seconds of the audit
  int64_t rows = 0;    // network rows of the audit
};

}  // namespace

int main(int argc, char** argv) {
  std::string repository = "checkpoints", model = "mnist39", prompts_file;
  std::vector<int64_t> classes, ks = {8, 16, 24, 48, 96};
  std::vector<double> tolerances = {1e-3, 1e-4, 1e-6};
  int64_t samples = 4, t = 0;
  uint64_t seed = 500;
  int threads = 0;
  bool no_dense = false, verbose = false;
  CLI::App app{"eigenvalues and tolerance a verdict needs: Arnoldi grids against dense"};
  app.add_option("--repository", repository)->capture_default_str();
  app.add_option("--model", model)->capture_default_str();
  app.add_option("--class", classes, "class conditions (repeatable)");
  app.add_option("--prompts", prompts_file, "a file of prompts, one per line");
  app.add_option("--samples", samples, "samples per condition")->capture_default_str();
  app.add_option("--seed", seed)->capture_default_str();
  app.add_option("--t", t, "evaluation timestep (0: the audit's default)")->capture_default_str();
  app.add_option("-k", ks, "Arnoldi k values")->capture_default_str();
  app.add_option("--tolerance", tolerances, "Arnoldi tolerances")->capture_default_str();
  app.add_flag("--no-dense", no_dense, "no dense reference (d above the dense limit)");
  app.add_flag("--verbose", verbose, "print the samples that differ");
  app.add_option("--threads", threads)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  ConfigureTorchRuntime(threads);

  std::atomic<int64_t> rows{0};
  CheckpointOptions checkpoint_options;
  checkpoint_options.forward_observer = [&rows](int64_t n, bool) { rows += n; };
  server::ModelRegistry registry(repository, checkpoint_options, {}, int64_t{1} << 20);
  if (auto info = registry.Load(model); !info.ok()) {
    std::fprintf(stderr, "%s\n", std::string(info.status().message()).c_str());
    return 1;
  }
  auto loaded = registry.Get(model);
  const int64_t d = (*loaded)->network->sample_numel();

  v1::AuditRequest request;
  request.set_model(model);
  request.set_samples_per_condition(samples);
  request.set_seed(seed);
  if (t > 0) request.add_timesteps(t);
  for (int64_t c : classes) request.add_conditions()->set_class_label(c);
  if (!prompts_file.empty()) {
    std::ifstream in(prompts_file);
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty()) request.add_conditions()->set_prompt(line);
    }
  }

  std::vector<Config> configs;
  if (!no_dense) configs.push_back({"dense", v1::DENSE});
  for (double tolerance : tolerances) {
    for (int64_t k : ks) {
      configs.push_back({"arnoldi k=" + std::to_string(k) + " tol=" + std::to_string(tolerance),
                         v1::ARNOLDI, k, tolerance});
    }
  }
  std::vector<Outcome> outcomes;
  for (const Config& config : configs) {
    v1::AuditRequest run = request;
    run.mutable_curvature()->set_method(config.method);
    if (config.method == v1::ARNOLDI) {
      run.mutable_curvature()->set_num_eigenvalues(config.k);
      run.mutable_curvature()->set_arnoldi_tolerance(config.tolerance);
    }
    auto plan = server::PlanAudit(run, *loaded);
    if (!plan.ok()) {
      std::fprintf(stderr, "%s: %s\n", config.name.c_str(),
                   std::string(plan.status().message()).c_str());
      return 1;
    }
    rows = 0;
    auto report = server::RunAudit(*plan, {});
    if (!report.ok()) {
      std::fprintf(stderr, "%s: %s\n", config.name.c_str(),
                   std::string(report.status().message()).c_str());
      return 1;
    }
    Outcome outcome;
    outcome.seconds = report->timing().curvature_seconds();
    outcome.rows = rows;
    for (const v1::ConditionReport& condition : report->conditions()) {
      for (const v1::SampleReport& sample : condition.samples()) outcome.samples.push_back(sample);
    }
    outcomes.push_back(std::move(outcome));
    std::fprintf(stderr, "done: %s\n", config.name.c_str());
  }

  const int64_t n = static_cast<int64_t>(outcomes.front().samples.size());
  // Sampling rows are the same in every run: the dense run's rows are those
  // plus d Jacobian rows per sample.
  const int64_t sampling_rows = no_dense ? -1 : outcomes.front().rows - d * n;
  std::printf("model %s (d = %lld), %lld samples (seed %llu), reference: %s\n\n", model.c_str(),
              static_cast<long long>(d), static_cast<long long>(n),
              static_cast<unsigned long long>(seed), configs.front().name.c_str());
  std::printf(
      "| configuration | s per spectrum | JVPs per spectrum | verdicts differing | n+ "
      "differing (top k) | flat count differing (top k) | max abs d(kappa_max) |\n"
      "|---|---|---|---|---|---|---|\n");
  const std::vector<v1::SampleReport>& reference = outcomes.front().samples;
  for (size_t c = 0; c < configs.size(); ++c) {
    int64_t verdicts = 0, positives = 0, flats = 0;
    double kappa = 0;
    for (int64_t i = 0; i < n; ++i) {
      const v1::SampleReport& a = reference[i];
      const v1::SampleReport& b = outcomes[c].samples[i];
      verdicts += a.verdict() != b.verdict();
      if (verbose && a.verdict() != b.verdict()) {
        std::fprintf(stderr,
                     "%s sample %lld: verdict %s/%s n+ %lld/%lld kappa_max %.6g/%.6g "
                     "noise_radius %.4g/%.4g\n",
                     configs[c].name.c_str(), static_cast<long long>(i),
                     v1::Verdict_Name(a.verdict()).c_str(), v1::Verdict_Name(b.verdict()).c_str(),
                     static_cast<long long>(a.summary().positive_eigenvalues()),
                     static_cast<long long>(b.summary().positive_eigenvalues()),
                     a.summary().max_kappa(), b.summary().max_kappa(), a.summary().noise_radius(),
                     b.summary().noise_radius());
      }
      // Counts of a partial spectrum are of the k found; compare at the
      // top: min(count, k) must agree.
      const int64_t cap = configs[c].k > 0 ? configs[c].k : d;
      positives += std::min(a.summary().positive_eigenvalues(), cap) !=
                   std::min(b.summary().positive_eigenvalues(), cap);
      flats += std::min(a.summary().flat_directions(), cap) !=
               std::min(b.summary().flat_directions(), cap);
      kappa = std::max(kappa, std::abs(a.summary().max_kappa() - b.summary().max_kappa()));
    }
    const std::string jvps =
        configs[c].method == v1::DENSE || sampling_rows < 0
            ? (configs[c].method == v1::DENSE ? "(dense: " + std::to_string(d) + " rows)"
                                              : std::to_string(outcomes[c].rows / n) + " rows")
            : std::to_string((outcomes[c].rows - sampling_rows) / n);
    std::printf("| %s | %.3f | %s | %lld/%lld | %lld | %lld | %.2e |\n", configs[c].name.c_str(),
                outcomes[c].seconds / static_cast<double>(n), jvps.c_str(),
                static_cast<long long>(verdicts), static_cast<long long>(n),
                static_cast<long long>(positives), static_cast<long long>(flats), kappa);
  }
  return 0;
}
