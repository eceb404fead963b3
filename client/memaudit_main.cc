// memaudit: the command-line client of memaudit-server.
//
// Exit codes: 0 success, 1 error (one readable line on stderr), 2 usage,
// 3 an audit reached the --fail-on level, 130 interrupted.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client.h"
#include "report_format.h"
#include "sample_files.h"

namespace memaudit::client {
namespace {

constexpr int kExitError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitGate = 3;
constexpr int kExitInterrupted = 130;

std::atomic<bool> g_interrupted{false};
void OnInterrupt(int) { g_interrupted = true; }

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "memaudit: %s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kCancelled && g_interrupted ? kExitInterrupted
                                                                        : kExitError;
}

void PrintJson(const nlohmann::json& json) { std::cout << json.dump(2) << std::endl; }

class ProgressBar {
 public:
  explicit ProgressBar(bool quiet) : tty_(!quiet && isatty(STDERR_FILENO)), quiet_(quiet) {}
  ~ProgressBar() { Done(); }
  void Update(const v1::AuditProgress& progress) {
    if (quiet_) return;
    const int64_t total = std::max<int64_t>(1, progress.samples_total());
    if (tty_) {
      constexpr int kWidth = 30;
      const int filled = static_cast<int>(kWidth * progress.samples_done() / total);
      std::fprintf(stderr, "\r[%s%s] %lld/%lld samples  %-10s %-10s",
                   std::string(filled, '#').c_str(), std::string(kWidth - filled, '.').c_str(),
                   static_cast<long long>(progress.samples_done()),
                   static_cast<long long>(progress.samples_total()), progress.condition().c_str(),
                   progress.phase().c_str());
      std::fflush(stderr);
      drawn_ = true;
    } else if (progress.phase() == "measured") {
      std::fprintf(stderr, "progress: %lld/%lld samples (%s)\n",
                   static_cast<long long>(progress.samples_done()),
                   static_cast<long long>(progress.samples_total()), progress.condition().c_str());
    }
  }
  void Done() {
    if (drawn_) std::fprintf(stderr, "\n");
    drawn_ = false;
  }

 private:
  bool tty_;
  bool quiet_;
  bool drawn_ = false;
};

int VerdictRank(v1::Verdict verdict) {
  switch (verdict) {
    case v1::MEMORIZED:
      return 2;
    case v1::PARTIAL:
      return 1;
    default:
      return 0;
  }
}

// Prints the finished job and decides the exit code.
int ReportJob(const v1::AuditJob& job, bool json, bool per_sample, const std::string& fail_on) {
  if (job.state() != v1::JOB_SUCCEEDED) {
    if (json)
      PrintJson({{"job_id", job.id()},
                 {"state", v1::JobState_Name(job.state())},
                 {"error", job.error()}});
    return Fail(absl::Status(job.state() == v1::JOB_CANCELLED ? absl::StatusCode::kCancelled
                                                              : absl::StatusCode::kInternal,
                             absl::StrCat("audit ", job.id(), " ", v1::JobState_Name(job.state()),
                                          job.error().empty() ? "" : ": ", job.error())));
  }
  if (json) {
    PrintJson(AuditReportJson(job));
  } else {
    std::cout << "audit " << job.id() << "\n" << AuditReportText(job.report(), per_sample);
  }
  const int rank = VerdictRank(job.report().verdict());
  if ((fail_on == "memorized" && rank >= 2) || (fail_on == "partial" && rank >= 1)) {
    std::fprintf(stderr, "memaudit: verdict %s reaches --fail-on %s\n",
                 VerdictWord(job.report().verdict()).c_str(), fail_on.c_str());
    return kExitGate;
  }
  return 0;
}

int Watch(Client& client, const std::string& id, bool json, bool per_sample, bool quiet,
          const std::string& fail_on) {
  // Ctrl-C while following an audit cancels the job (exit 130); elsewhere
  // SIGINT keeps its default action.
  signal(SIGINT, OnInterrupt);
  ProgressBar bar(quiet || json);
  auto job = client.WatchAudit(
      id,
      [&](const v1::AuditEvent& event) {
        if (event.has_progress()) bar.Update(event.progress());
      },
      [] { return g_interrupted.load(); });
  bar.Done();
  if (!job.ok()) {
    if (g_interrupted) {
      auto cancelled = client.CancelAudit(id);
      std::fprintf(stderr, "memaudit: interrupted; audit %s %s\n", id.c_str(),
                   cancelled.ok() ? "cancelled" : "may still be running");
      return kExitInterrupted;
    }
    return Fail(job.status());
  }
  return ReportJob(*job, json, per_sample, fail_on);
}

v1::Condition ClassCondition(int64_t label) {
  v1::Condition condition;
  condition.set_class_label(label);
  return condition;
}

}  // namespace

int Main(int argc, char** argv) {
  CLI::App app{"memaudit: audit diffusion models for memorization (client of memaudit-server)"};
  app.require_subcommand(1);
  std::string target = "127.0.0.1:8500";
  double timeout_seconds = 300;
  app.add_option("--server", target, "memaudit-server address HOST:PORT")->capture_default_str();
  app.add_option("--timeout", timeout_seconds, "deadline for unary calls in seconds (0: none)")
      ->capture_default_str();

  std::string health_service;
  CLI::App* health = app.add_subcommand("health", "grpc.health.v1 status (exit 1 unless SERVING)");
  health->add_option("--service", health_service, "service name (default: the whole server)");

  std::string model_name;
  bool models_json = false;
  CLI::App* models = app.add_subcommand("models", "list models, or describe one");
  models->add_option("name", model_name, "model to describe");
  models->add_flag("--json", models_json, "machine-readable output");
  CLI::App* load = app.add_subcommand("load", "(re)load a model from the repository");
  load->add_option("name", model_name, "model")->required();
  CLI::App* unload = app.add_subcommand("unload", "unload a model");
  unload->add_option("name", model_name, "model")->required();

  // Options shared by sample, spectrum and audit.
  int64_t steps = 0;
  std::optional<double> guidance;
  std::string sampler = "ddim";
  double eta = 0;
  auto add_sampling = [&](CLI::App* command) {
    command->add_option("--model", model_name, "model name")->required();
    command->add_option("--steps", steps, "sampling steps (default 50)");
    command->add_option("--guidance", guidance, "classifier-free guidance weight (default 1)");
    command->add_option("--sampler", sampler, "ddim | ddpm")->capture_default_str();
    command->add_option("--eta", eta, "DDIM eta")->capture_default_str();
  };
  auto sampling_options = [&](v1::SamplingOptions* options) {
    options->set_sampler(sampler == "ddpm" ? v1::DDPM : v1::DDIM);
    options->set_num_steps(steps);
    options->set_eta(eta);
    if (guidance) options->set_guidance_scale(*guidance);
  };

  int64_t sample_count = 16;
  uint64_t seed = 0;
  std::optional<int64_t> class_label;
  std::string out_path;
  float low = -1, high = 1;
  CLI::App* sample =
      app.add_subcommand("sample", "draw samples; PNG grid for images, .npy otherwise");
  add_sampling(sample);
  sample->add_option("--count", sample_count, "samples")->capture_default_str();
  sample->add_option("--seed", seed, "first seed (sample i uses seed + i)")->capture_default_str();
  sample->add_option("--class", class_label, "class label");
  sample->add_option("--out", out_path, "output file: .png (image models) or .npy");
  sample->add_option("--range", low, "pixel value mapped to black (PNG)")->capture_default_str();
  sample->add_option("--range-high", high, "pixel value mapped to white (PNG)")
      ->capture_default_str();

  std::optional<int64_t> timestep;
  std::string score_kind = "conditional";
  bool symmetrize = false, json = false;
  int top = 10;
  std::string plot_path;
  CLI::App* spectrum = app.add_subcommand("spectrum", "curvature spectrum at a sampled point");
  add_sampling(spectrum);
  spectrum->add_option("--seed", seed, "seed of the sample")->capture_default_str();
  spectrum->add_option("--class", class_label, "class label");
  spectrum->add_option("--t", timestep, "timestep (default: first step with sigma_t < 0.1)");
  spectrum
      ->add_option("--score-kind", score_kind, "conditional | unconditional | guided | difference")
      ->capture_default_str()
      ->check(CLI::IsMember({"conditional", "unconditional", "guided", "difference"}));
  spectrum->add_flag("--symmetrize", symmetrize, "spectrum of (H + H^T)/2 instead of H");
  std::string method = "auto", eigen_target = "largest_real";
  int64_t eigenvalues_wanted = 0;
  auto add_method = [&](CLI::App* command) {
    command->add_option("--method", method, "auto | dense | arnoldi")
        ->capture_default_str()
        ->check(CLI::IsMember({"auto", "dense", "arnoldi"}));
    command->add_option("-k,--eigenvalues", eigenvalues_wanted,
                        "Arnoldi: eigenvalues to find (default 24)");
  };
  add_method(spectrum);
  spectrum
      ->add_option("--target", eigen_target,
                   "Arnoldi: largest_real | largest_magnitude | smallest_real")
      ->capture_default_str()
      ->check(CLI::IsMember({"largest_real", "largest_magnitude", "smallest_real"}));
  spectrum->add_option("--top", top, "eigenvalues to print (0: all)")->capture_default_str();
  spectrum->add_flag("--json", json, "machine-readable output");
  spectrum->add_option("--plot", plot_path, "write an SVG plot of the spectrum");
  int64_t spectrum_early_steps = 0;
  spectrum->add_option("--early-steps", spectrum_early_steps,
                       "also the early metrics of this generation over its first K steps");

  std::vector<int64_t> classes;
  std::vector<int64_t> timesteps;
  int64_t samples_per_condition = 16;
  std::string fail_on = "memorized";
  bool per_sample = false, no_wait = false, quiet = false;
  CLI::App* audit = app.add_subcommand("audit", "run a memorization audit and wait for the report");
  add_sampling(audit);
  audit->add_option("--class", classes, "class labels to audit (repeatable)");
  audit->add_option("--samples", samples_per_condition, "samples per condition")
      ->capture_default_str();
  audit->add_option("--seed", seed, "first seed")->capture_default_str();
  audit->add_option("--t", timesteps,
                    "evaluation timesteps (default: first step with sigma_t < 0.1)");
  audit->add_option("--score-kind", score_kind, "score whose Jacobian is taken")
      ->capture_default_str()
      ->check(CLI::IsMember({"conditional", "unconditional", "guided", "difference"}));
  audit->add_flag("--json", json, "print the report as JSON (a public contract)");
  audit
      ->add_option("--fail-on", fail_on,
                   "exit 3 when the verdict reaches: memorized | partial | never")
      ->capture_default_str()
      ->check(CLI::IsMember({"memorized", "partial", "never"}));
  audit->add_flag("--per-sample", per_sample, "print every sample's numbers");
  audit->add_flag("--no-wait", no_wait, "print the job id and return");
  audit->add_flag("--quiet", quiet, "no progress output");
  add_method(audit);
  bool early_only = false;
  int64_t audit_early_steps = 0;
  audit->add_flag("--early-only", early_only,
                  "flag early: only the first steps' metrics; verdicts from the calibrated "
                  "verdict_policy.early_metric, or label-free (outliers among >= 3 conditions)");
  audit->add_option("--early-steps", audit_early_steps,
                    "K: with --early-only the steps used (default 1); without it, add each "
                    "condition's early metrics to the full report");

  std::vector<int64_t> memorized_classes, generalizing_classes;
  CLI::App* calibrate = app.add_subcommand(
      "calibrate", "ROC AUC, TPR at 1% FPR and thresholds of each metric on labelled classes");
  add_sampling(calibrate);
  calibrate->add_option("--memorized", memorized_classes, "class labels known to be memorized")
      ->required()
      ->delimiter(',');
  calibrate->add_option("--not-memorized", generalizing_classes, "class labels known to generalize")
      ->required()
      ->delimiter(',');
  calibrate->add_option("--samples", samples_per_condition, "generations per class")
      ->capture_default_str();
  calibrate->add_option("--seed", seed, "first seed")->capture_default_str();
  calibrate->add_option("--early-steps", audit_early_steps, "K for the early metrics");
  calibrate->add_flag("--json", json, "machine-readable output");

  int64_t early_steps = 1, probes = 0;
  CLI::App* early = app.add_subcommand(
      "early", "first-step memorization metrics (Wen, Jeon; unconditional: |s|^2, |Hs|^2, tr H)");
  add_sampling(early);
  early->add_option("--class", class_label, "class label (none: unconditional metrics)");
  early->add_option("--count", sample_count, "generations n")->capture_default_str();
  early->add_option("--seed", seed, "first seed")->capture_default_str();
  early->add_option("--early-steps", early_steps, "the first K sampling steps")
      ->capture_default_str();
  early->add_option("--probes", probes, "Hutchinson probes (default 8)");
  early->add_flag("--json", json, "machine-readable output");

  std::string job_id;
  CLI::App* watch = app.add_subcommand("watch", "follow a running audit to its report");
  watch->add_option("id", job_id, "job id")->required();
  watch->add_flag("--json", json, "print the report as JSON");
  watch->add_option("--fail-on", fail_on, "memorized | partial | never")
      ->capture_default_str()
      ->check(CLI::IsMember({"memorized", "partial", "never"}));
  watch->add_flag("--per-sample", per_sample, "print every sample's numbers");
  CLI::App* get = app.add_subcommand("get", "show an audit job");
  get->add_option("id", job_id, "job id")->required();
  get->add_flag("--json", json, "print the report as JSON");
  get->add_flag("--per-sample", per_sample, "print every sample's numbers");
  CLI::App* cancel = app.add_subcommand("cancel", "cancel an audit job");
  cancel->add_option("id", job_id, "job id")->required();
  CLI::App* jobs = app.add_subcommand("jobs", "list audit jobs");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : kExitUsage;
  }

  Client client(target, std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000)));

  if (*health) {
    auto status = client.Health(health_service);
    if (!status.ok()) return Fail(status.status());
    std::cout << *status << std::endl;
    return *status == "SERVING" ? 0 : kExitError;
  }
  if (*models) {
    if (!model_name.empty()) {
      auto info = client.GetModel(model_name);
      if (!info.ok()) return Fail(info.status());
      std::cout << ModelDetails(*info);
      return 0;
    }
    auto list = client.ListModels();
    if (!list.ok()) return Fail(list.status());
    if (models_json) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& m : list->models()) {
        out.push_back({{"name", m.name()},
                       {"state", v1::ModelState_Name(m.state())},
                       {"device", m.device()},
                       {"dimension", m.dimension()},
                       {"checksum", m.checksum()},
                       {"error", m.last_error()}});
      }
      PrintJson(out);
    } else {
      std::cout << ModelTable(*list);
    }
    return 0;
  }
  if (*load || *unload) {
    auto info = *load ? client.LoadModel(model_name) : client.UnloadModel(model_name);
    if (!info.ok()) return Fail(info.status());
    std::cout << info->name() << ": " << v1::ModelState_Name(info->state()) << std::endl;
    return 0;
  }
  if (*sample) {
    if (sample_count < 1) return Fail(absl::InvalidArgumentError("--count must be positive"));
    auto info = client.GetModel(model_name);
    if (!info.ok()) return Fail(info.status());
    v1::SampleRequest request;
    request.set_model(model_name);
    for (int64_t i = 0; i < sample_count; ++i) request.add_seeds(seed + i);
    if (class_label) request.mutable_condition()->set_class_label(*class_label);
    sampling_options(request.mutable_sampling());
    auto response = client.Sample(request);
    if (!response.ok()) return Fail(response.status());
    auto values = TensorValues(response->samples());
    if (!values.ok()) return Fail(values.status());
    const std::vector<int64_t> shape(info->config().sample_shape().begin(),
                                     info->config().sample_shape().end());
    if (out_path.empty()) {
      const size_t per = values->size() / sample_count;
      for (int64_t i = 0; i < sample_count; ++i) {
        std::cout << "seed " << seed + i << ":";
        for (size_t j = 0; j < std::min<size_t>(per, 16); ++j) {
          std::cout << absl::StrFormat(" %.4f", (*values)[i * per + j]);
        }
        std::cout << (per > 16 ? " ..." : "") << "\n";
      }
      return 0;
    }
    absl::Status written;
    if (out_path.size() > 4 && out_path.substr(out_path.size() - 4) == ".png") {
      if (!IsImageShape(shape)) {
        return Fail(absl::InvalidArgumentError(
            "--out .png needs an image-shaped model ([H, W], [1, H, W] or [3, H, W]); use .npy"));
      }
      written = WritePngGrid(out_path, *values, sample_count, shape, low, high);
    } else {
      std::vector<int64_t> full{sample_count};
      full.insert(full.end(), shape.begin(), shape.end());
      written = WriteNpy(out_path, *values, full);
    }
    if (!written.ok()) return Fail(written);
    std::cout << "wrote " << sample_count << " samples to " << out_path << std::endl;
    return 0;
  }
  auto curvature_options = [&](v1::CurvatureOptions* options) -> absl::Status {
    static const std::map<std::string, v1::ScoreKind> kKinds = {
        {"conditional", v1::CONDITIONAL},
        {"unconditional", v1::UNCONDITIONAL},
        {"guided", v1::GUIDED},
        {"difference", v1::DIFFERENCE}};
    auto it = kKinds.find(score_kind);
    if (it == kKinds.end()) {
      return absl::InvalidArgumentError(absl::StrCat("--score-kind \"", score_kind,
                                                     "\" is not conditional, unconditional, "
                                                     "guided or difference"));
    }
    options->set_score_kind(it->second);
    options->set_symmetrize(symmetrize);
    options->set_method(method == "dense"     ? v1::DENSE
                        : method == "arnoldi" ? v1::ARNOLDI
                                              : v1::SPECTRUM_METHOD_AUTO);
    options->set_num_eigenvalues(eigenvalues_wanted);
    options->set_target(eigen_target == "largest_magnitude" ? v1::LARGEST_MAGNITUDE
                        : eigen_target == "smallest_real"   ? v1::SMALLEST_REAL
                                                            : v1::LARGEST_REAL);
    return absl::OkStatus();
  };
  if (*spectrum) {
    v1::SpectrumRequest request;
    request.set_model(model_name);
    request.set_seed(seed);
    if (timestep) request.set_timestep(*timestep);
    if (class_label) request.mutable_condition()->set_class_label(*class_label);
    request.set_early_steps(spectrum_early_steps);
    sampling_options(request.mutable_sampling());
    if (absl::Status s = curvature_options(request.mutable_curvature()); !s.ok()) return Fail(s);
    auto response = client.Spectrum(request);
    if (!response.ok()) return Fail(response.status());
    if (json) {
      PrintJson(SpectrumJson(*response));
    } else {
      std::cout << SpectrumText(*response, top);
    }
    if (!plot_path.empty()) {
      std::ofstream out(plot_path);
      out << SpectrumSvg(*response,
                         absl::StrFormat("%s, seed %d: curvature spectrum", model_name, seed));
      if (!out) return Fail(absl::PermissionDeniedError(plot_path + ": cannot write"));
      if (!json) std::cout << "plot written to " << plot_path << std::endl;
    }
    return 0;
  }
  if (*calibrate) {
    v1::CalibrationRequest request;
    request.set_model(model_name);
    for (int64_t label : memorized_classes) *request.add_memorized() = ClassCondition(label);
    for (int64_t label : generalizing_classes) *request.add_not_memorized() = ClassCondition(label);
    request.set_samples_per_condition(samples_per_condition);
    request.set_seed(seed);
    request.set_early_steps(audit_early_steps);
    sampling_options(request.mutable_sampling());
    auto response = client.Calibrate(request);
    if (!response.ok()) return Fail(response.status());
    if (json) {
      PrintJson(CalibrationJson(*response));
    } else {
      std::cout << CalibrationText(*response);
    }
    return 0;
  }
  if (*early) {
    v1::EarlyMetricsRequest request;
    request.set_model(model_name);
    for (int64_t i = 0; i < sample_count; ++i) request.add_seeds(seed + i);
    if (class_label) request.mutable_condition()->set_class_label(*class_label);
    sampling_options(request.mutable_sampling());
    request.set_steps(early_steps);
    request.set_hutchinson_probes(probes);
    auto response = client.EarlyMetrics(request);
    if (!response.ok()) return Fail(response.status());
    if (json) {
      PrintJson(EarlyMetricsJson(*response));
    } else {
      std::cout << EarlyMetricsText(*response);
    }
    return 0;
  }
  if (*audit) {
    v1::AuditRequest request;
    request.set_model(model_name);
    for (int64_t label : classes) *request.add_conditions() = ClassCondition(label);
    request.set_samples_per_condition(samples_per_condition);
    request.set_seed(seed);
    request.set_early_only(early_only);
    request.set_early_steps(audit_early_steps);
    for (int64_t t : timesteps) request.add_timesteps(t);
    sampling_options(request.mutable_sampling());
    if (absl::Status s = curvature_options(request.mutable_curvature()); !s.ok()) return Fail(s);
    auto job = client.SubmitAudit(request);
    if (!job.ok()) return Fail(job.status());
    if (no_wait) {
      std::cout << job->id() << std::endl;
      return 0;
    }
    if (!json && !quiet) std::fprintf(stderr, "audit %s submitted\n", job->id().c_str());
    return Watch(client, job->id(), json, per_sample, quiet, fail_on);
  }
  if (*watch) return Watch(client, job_id, json, per_sample, false, fail_on);
  if (*get) {
    auto job = client.GetAudit(job_id);
    if (!job.ok()) return Fail(job.status());
    if (job->state() == v1::JOB_SUCCEEDED) return ReportJob(*job, json, per_sample, "never");
    if (json) {
      PrintJson({{"job_id", job->id()},
                 {"state", v1::JobState_Name(job->state())},
                 {"samples_done", job->progress().samples_done()},
                 {"samples_total", job->progress().samples_total()},
                 {"error", job->error()}});
    } else {
      std::cout << job->id() << " " << v1::JobState_Name(job->state()) << " "
                << job->progress().samples_done() << "/" << job->progress().samples_total()
                << (job->error().empty() ? "" : " " + job->error()) << std::endl;
    }
    return 0;
  }
  if (*cancel) {
    auto job = client.CancelAudit(job_id);
    if (!job.ok()) return Fail(job.status());
    std::cout << job->id() << " " << v1::JobState_Name(job->state()) << std::endl;
    return 0;
  }
  if (*jobs) {
    auto list = client.ListAudits();
    if (!list.ok()) return Fail(list.status());
    std::cout << absl::StrFormat("%-20s %-14s %-10s %9s  %s\n", "ID", "STATE", "MODEL", "SAMPLES",
                                 "VERDICT");
    for (const v1::AuditJob& job : list->jobs()) {
      std::cout << absl::StrFormat(
          "%-20s %-14s %-10s %4d/%-4d  %s\n", job.id(), v1::JobState_Name(job.state()),
          job.request().model(), job.progress().samples_done(), job.progress().samples_total(),
          job.state() == v1::JOB_SUCCEEDED ? VerdictWord(job.report().verdict()) : "");
    }
    return 0;
  }
  return kExitUsage;
}

}  // namespace memaudit::client

int main(int argc, char** argv) { return memaudit::client::Main(argc, argv); }
