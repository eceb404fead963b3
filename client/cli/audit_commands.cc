// audit, watch, get, cancel, jobs: audits are server-side jobs; merge
// joins the reports of an audit's shards.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/cli/commands.h"
#include "client/cli/common.h"
#include "client/fanout.h"
#include "client/fanout_runner.h"
#include "client/report_format.h"
#include "client/targets.h"

namespace memaudit::client::cli {
namespace {

// How a finished job is reported: audit, watch and get.
struct ReportFlags {
  bool per_sample = false;
  std::string fail_on = "memorized";

  void AddPerSample(CLI::App* command) {
    command->add_flag("--per-sample", per_sample, "print every sample's numbers");
  }
  void AddFailOn(CLI::App* command, const std::string& description) {
    AddWordOption(command, "--fail-on", fail_on, FailOnWords(), description);
  }
  absl::StatusOr<FailOn> Gate() const { return ParseWord(FailOnWords(), fail_on, "--fail-on"); }
};

// Prints the finished job and decides the exit code: the job's failure,
// the --fail-on gate, or success.
int ReportJob(const v1::AuditJob& job, bool json, bool per_sample, FailOn fail_on) {
  if (job.state() != v1::JOB_SUCCEEDED) {
    if (json) {
      PrintJson({{"job_id", job.id()},
                 {"state", v1::JobState_Name(job.state())},
                 {"error", job.error()}});
    }
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
  if (ReachesFailOn(job.report().verdict(), fail_on)) {
    std::fprintf(stderr, "memaudit: verdict %s reaches --fail-on %s\n",
                 VerdictWord(job.report().verdict()).c_str(),
                 std::string(WordOf(FailOnWords(), fail_on).value_or("")).c_str());
    return kExitGate;
  }
  return kExitOk;
}

// An audit's progress on stderr: a bar on a terminal, a line per measured
// batch otherwise, nothing when silent.
class ProgressDisplay {
 public:
  explicit ProgressDisplay(bool silent) : silent_(silent), bar_(silent) {}

  // `where` (may be empty) is added to the line, e.g. the shard.
  void Show(const v1::AuditProgress& progress, const std::string& where = "") {
    if (silent_) return;
    if (bar_.drawing()) {
      bar_.Draw(progress.samples_done(), progress.samples_total(),
                absl::StrFormat("  %-10s %-10s%s", progress.condition(),
                                PhaseWord(progress.phase()), where.empty() ? "" : " " + where));
    } else if (progress.phase() == v1::AUDIT_PHASE_MEASURED) {
      std::fprintf(stderr, "progress: %lld/%lld samples (%s%s)\n",
                   static_cast<long long>(progress.samples_done()),
                   static_cast<long long>(progress.samples_total()), progress.condition().c_str(),
                   where.empty() ? "" : (", " + where).c_str());
    }
  }
  // A line of its own (also when silent: it says something went wrong).
  void Notice(const std::string& line) {
    bar_.Done();
    std::fprintf(stderr, "memaudit: %s\n", line.c_str());
  }
  void Done() { bar_.Done(); }

 private:
  const bool silent_;
  ProgressBar bar_;
};

// Follows job `id` to its end with a progress display on stderr (none with
// --quiet), then reports it; a shard's report (`shard`) gets its shard set
// and is no gate. Ctrl-C cancels the job and exits 130. Messages name the
// job as `reference` (ADDRESS/ID when it is not on --server), or `id`.
int Watch(Client& client, const std::string& id, const CommonOptions& common, bool per_sample,
          FailOn fail_on, const std::optional<v1::AuditShard>& shard = std::nullopt,
          const std::string& reference = "") {
  const std::string& name = reference.empty() ? id : reference;
  CatchInterrupts();
  ProgressDisplay display(common.quiet);
  absl::StatusOr<v1::AuditJob> job = client.WatchAudit(
      id,
      [&](const v1::AuditEvent& event) {
        if (event.has_progress()) display.Show(event.progress());
      },
      Interrupted);
  display.Done();
  if (!job.ok()) {
    if (Interrupted()) {
      absl::StatusOr<v1::AuditJob> cancelled = client.CancelAudit(id);
      std::fprintf(stderr, "memaudit: interrupted; audit %s %s\n", name.c_str(),
                   cancelled.ok() ? "cancelled" : "may still be running");
      return kExitInterrupted;
    }
    const int exit_code = Fail(job.status());
    if (job.status().code() == absl::StatusCode::kUnavailable) {
      // The job is the server's: it may outlive this connection.
      std::fprintf(stderr,
                   "memaudit: lost the server while following audit %s. A server with "
                   "--state_dir resumes it when it restarts: follow it with `memaudit watch %s` "
                   "(or read it with `memaudit get %s`); on a server without one it is lost: "
                   "submit it again\n",
                   name.c_str(), name.c_str(), name.c_str());
    }
    return exit_code;
  }
  if (!shard) return ReportJob(*job, common.json, per_sample, fail_on);
  if (job->state() == v1::JOB_SUCCEEDED) *job->mutable_report()->mutable_shard() = *shard;
  return ReportJob(*job, common.json, per_sample, FailOn::kNever);
}

struct AuditFlags {
  SamplingFlags sampling;
  CurvatureFlags curvature;
  ReportFlags report;
  ConditionListFlags conditions;
  int64_t samples = 16;
  uint64_t seed = 0;
  std::vector<int64_t> timesteps;
  bool no_wait = false;
  bool early_only = false;
  int64_t early_steps = 0;
  std::string label_free_metric;
  int64_t shards = 0;                               // --shards: fan-out
  std::optional<int64_t> shard_index, shard_count;  // batch sharding
  std::string html;                                 // --html: the page too
  EvidenceOptions evidence;
};

// `status` with "FLAG: " before its message.
absl::Status Named(const std::string& flag, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat(flag, ": ", status.message()));
}

// The audit fanned out across `replicas` (--server with several addresses,
// or --shards), printed like one server's.
int RunFannedOut(const CommonOptions& common, const AuditFlags& flags,
                 const std::vector<Replica>& replicas, const v1::AuditRequest& request,
                 FailOn fail_on) {
  CatchInterrupts();
  ProgressDisplay display(common.quiet);
  FanoutOptions options;
  options.shards = flags.shards;
  options.timeout = std::chrono::milliseconds(static_cast<int64_t>(common.timeout_seconds * 1000));
  options.keepalive = common.keepalive();
  options.security = common.security;
  options.interrupted = Interrupted;
  options.on_progress = [&display](const FanoutProgress& progress) {
    display.Show(progress.progress, absl::StrCat("shard ", progress.shard, " of ", progress.shards,
                                                 " on ", progress.replica));
  };
  options.on_notice = [&display](const std::string& line) { display.Notice(line); };
  if (!common.quiet) {
    std::fprintf(stderr, "audit fanned out across %zu replica(s)\n", replicas.size());
  }
  absl::StatusOr<FanoutResult> result = RunFannedOutAudit(replicas, request, options);
  display.Done();
  if (!result.ok()) return Fail(result.status());
  v1::AuditJob job;
  job.set_id(absl::StrJoin(result->jobs, ","));
  job.set_state(v1::JOB_SUCCEEDED);
  *job.mutable_report() = std::move(result->report);
  return ReportJob(job, common.json, flags.report.per_sample, fail_on);
}

int RunAudit(const CommonOptions& common, const AuditFlags& flags) {
  v1::AuditRequest request;
  request.set_model(flags.sampling.model);
  absl::StatusOr<std::vector<v1::Condition>> conditions = flags.conditions.Conditions();
  if (!conditions.ok()) return Fail(conditions.status());
  for (v1::Condition& condition : *conditions) *request.add_conditions() = std::move(condition);
  request.set_samples_per_condition(flags.samples);
  request.set_seed(flags.seed);
  request.set_early_only(flags.early_only);
  request.set_early_steps(flags.early_steps);
  request.set_label_free_metric(flags.label_free_metric);
  for (int64_t t : flags.timesteps) request.add_timesteps(t);
  if (absl::Status s = flags.sampling.Fill(request.mutable_sampling()); !s.ok()) return Fail(s);
  if (absl::Status s = flags.curvature.Fill(request.mutable_curvature()); !s.ok()) return Fail(s);
  absl::StatusOr<FailOn> gate = flags.report.Gate();
  if (!gate.ok()) return Fail(gate.status());
  absl::StatusOr<std::vector<Replica>> replicas = ResolveReplicas(common.server);
  if (!replicas.ok()) return Fail(Named("--server", replicas.status()));
  const bool fan_out = replicas->size() > 1 || flags.shards > 1;
  if (!flags.html.empty() && (fan_out || flags.shard_index || flags.no_wait)) {
    return Fail(absl::InvalidArgumentError(
        "--html follows one audit on one server to its end: not with several servers, "
        "--shards, --shard-index or --no-wait (make each job's page with `memaudit report --id`)"));
  }
  if (flags.no_wait && (fan_out || flags.shard_index)) {
    return Fail(absl::InvalidArgumentError(
        "--no-wait follows no shards: it needs one server and no --shards or --shard-index"));
  }
  std::optional<v1::AuditShard> shard;
  if (flags.shard_index) {
    if (replicas->size() > 1 || flags.shards > 1) {
      return Fail(absl::InvalidArgumentError(
          "--shard-index audits one shard on one server: give --server one address, no --shards"));
    }
    absl::StatusOr<std::vector<ShardRequest>> split = SplitAudit(request, *flags.shard_count);
    if (!split.ok()) return Fail(Named("--shard-count", split.status()));
    if (*flags.shard_index < 0 || *flags.shard_index >= static_cast<int64_t>(split->size())) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--shard-index ", *flags.shard_index, ": this audit splits into shards 0..",
                       split->size() - 1,
                       CanSplitAudit(request) ? " (fewer conditions x samples than --shard-count)"
                                              : " (audits with early metrics are not split)")));
    }
    shard = (*split)[*flags.shard_index].shard;
    request = (*split)[*flags.shard_index].request;
  } else if (fan_out) {
    return RunFannedOut(common, flags, *replicas, request, *gate);
  }
  Client client = common.Connect();
  absl::StatusOr<v1::AuditJob> job = client.SubmitAudit(request);
  if (!job.ok()) return Fail(job.status());
  if (flags.no_wait) {
    std::cout << job->id() << std::endl;
    return kExitOk;
  }
  if (!common.quiet) std::fprintf(stderr, "audit %s submitted\n", job->id().c_str());
  const int exit_code = Watch(client, job->id(), common, flags.report.per_sample, *gate, shard);
  if (!flags.html.empty() && (exit_code == kExitOk || exit_code == kExitGate)) {
    // The page after the verdict: a failure to draw it fails the command.
    if (absl::Status written =
            WriteHtmlReport(client, job->id(), flags.html, flags.evidence, common.quiet);
        !written.ok()) {
      return Fail(Named("--html", written));
    }
  }
  return exit_code;
}

// merge: the shard reports in `files`, merged and printed like an audit.
int RunMerge(const CommonOptions& common, const std::vector<std::string>& files,
             const ReportFlags& report) {
  absl::StatusOr<FailOn> gate = report.Gate();
  if (!gate.ok()) return Fail(gate.status());
  std::vector<ShardReport> shards;
  std::vector<std::string> jobs;
  for (const std::string& file : files) {
    std::ifstream in(file);
    if (!in) return Fail(absl::NotFoundError(absl::StrCat(file, ": cannot read")));
    nlohmann::json json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded()) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(file, ": not JSON")));
    }
    absl::StatusOr<v1::AuditReport> parsed = ShardReportFromJson(json);
    if (!parsed.ok()) return Fail(Named(file, parsed.status()));
    jobs.push_back(json.value("job_id", ""));
    shards.push_back({file, *std::move(parsed)});
  }
  absl::StatusOr<v1::AuditReport> merged = MergeShardReports(shards);
  if (!merged.ok()) return Fail(merged.status());
  v1::AuditJob job;
  job.set_id(absl::StrJoin(jobs, ","));
  job.set_state(v1::JOB_SUCCEEDED);
  *job.mutable_report() = *std::move(merged);
  return ReportJob(job, common.json, report.per_sample, *gate);
}

// The job id argument of watch, get and cancel.
void AddJobId(CLI::App* command, std::string& id) {
  command->add_option("id", id, "job id, or ADDRESS/ID (a fanned-out report's shards)")->required();
}

}  // namespace

Command AddAudit(CLI::App& app, CommonOptions& common) {
  auto flags = std::make_shared<AuditFlags>();
  CLI::App* command =
      app.add_subcommand("audit", "run a memorization audit and wait for the report");
  flags->sampling.Add(command);
  flags->conditions.Add(command);
  AddCountOption(command, "--samples", flags->samples, "samples per condition");
  AddSeedOption(command, flags->seed, "first seed");
  command->add_option("--t", flags->timesteps,
                      "evaluation timesteps (default: the one whose sigma_t is nearest 0.08)");
  flags->curvature.AddScoreKind(command, "score whose Jacobian is taken");
  command->add_flag("--json", common.json, "print the report as JSON (a public contract)");
  flags->report.AddFailOn(command, "exit 3 when the verdict reaches: memorized | partial | never");
  flags->report.AddPerSample(command);
  command->add_flag("--no-wait", flags->no_wait, "print the job id and return");
  command->add_flag("--quiet", common.quiet, "no progress output");
  flags->curvature.AddMethod(command);
  command->add_flag("--early-only", flags->early_only,
                    "flag early: only the first steps' metrics; verdicts from the calibrated "
                    "verdict_policy.early_metric, or label-free (outliers among >= 3 conditions)");
  command->add_option("--early-steps", flags->early_steps,
                      "K: with --early-only the steps used (default 1); without it, add each "
                      "condition's early metrics to the full report");
  command->add_option("--label-free-metric", flags->label_free_metric,
                      "metric of label-free flags: anisotropy (forward passes only; the "
                      "default for prompts), jeon_sharpness (the default for class labels), "
                      "wen_noise_difference, anisotropy_norm, anisotropy_alignment");
  command
      ->add_option("--shards", flags->shards,
                   "fan-out: split into N shards (default: one per --server address when it "
                   "names several; the report is the same as one server's)")
      ->check(PositiveNumber());
  CLI::Option* count =
      command->add_option("--shard-count", flags->shard_count, "batch: the audit's N shards")
          ->check(PositiveNumber());
  command
      ->add_option("--shard-index", flags->shard_index,
                   "batch: audit only shard I (0..N-1) of --shard-count N and print its report "
                   "(--json for `memaudit merge`); no --fail-on gate: merge gates")
      ->check(NonNegativeNumber())
      ->needs(count);
  count->needs("--shard-index");
  command->add_option("--html", flags->html,
                      "also write the audit as one self-contained HTML page (memaudit report)");
  AddHtmlFlags(command, flags->evidence);
  return {command, [flags](const CommonOptions& common) { return RunAudit(common, *flags); }};
}

Command AddMerge(CLI::App& app, CommonOptions& common) {
  auto files = std::make_shared<std::vector<std::string>>();
  auto report = std::make_shared<ReportFlags>();
  CLI::App* command = app.add_subcommand(
      "merge", "merge the --json reports of an audit's shards (audit --shard-index) into one");
  command->add_option("files", *files, "shard reports (JSON)")->required();
  command->add_flag("--json", common.json, "print the merged report as JSON");
  report->AddFailOn(command, "exit 3 when the verdict reaches: memorized | partial | never");
  report->AddPerSample(command);
  return {command, [files, report](const CommonOptions& common) {
            return RunMerge(common, *files, *report);
          }};
}

Command AddWatch(CLI::App& app, CommonOptions& common) {
  auto id = std::make_shared<std::string>();
  auto report = std::make_shared<ReportFlags>();
  CLI::App* command = app.add_subcommand("watch", "follow a running audit to its report");
  AddJobId(command, *id);
  command->add_flag("--json", common.json, "print the report as JSON");
  command->add_flag("--quiet", common.quiet, "no progress output");
  report->AddFailOn(command, "memorized | partial | never");
  report->AddPerSample(command);
  return {command, [id, report](const CommonOptions& common) {
            absl::StatusOr<FailOn> gate = report->Gate();
            if (!gate.ok()) return Fail(gate.status());
            absl::StatusOr<JobOnServer> job = ConnectToJob(common, *id);
            if (!job.ok()) return Fail(job.status());
            return Watch(job->client, job->id, common, report->per_sample, *gate, std::nullopt,
                         *id);
          }};
}

Command AddGet(CLI::App& app, CommonOptions& common) {
  auto id = std::make_shared<std::string>();
  auto report = std::make_shared<ReportFlags>();
  CLI::App* command = app.add_subcommand("get", "show an audit job");
  AddJobId(command, *id);
  command->add_flag("--json", common.json, "print the report as JSON");
  report->AddPerSample(command);
  return {command, [id, report](const CommonOptions& common) {
            absl::StatusOr<JobOnServer> where = ConnectToJob(common, *id);
            if (!where.ok()) return Fail(where.status());
            absl::StatusOr<v1::AuditJob> job = where->client.GetAudit(where->id);
            if (!job.ok()) return Fail(job.status());
            // `get` shows; it is no gate.
            if (job->state() == v1::JOB_SUCCEEDED) {
              return ReportJob(*job, common.json, report->per_sample, FailOn::kNever);
            }
            if (common.json) {
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
            return kExitOk;
          }};
}

Command AddCancel(CLI::App& app, CommonOptions&) {
  auto id = std::make_shared<std::string>();
  CLI::App* command = app.add_subcommand("cancel", "cancel an audit job");
  AddJobId(command, *id);
  return {command, [id](const CommonOptions& common) {
            absl::StatusOr<JobOnServer> where = ConnectToJob(common, *id);
            if (!where.ok()) return Fail(where.status());
            absl::StatusOr<v1::AuditJob> job = where->client.CancelAudit(where->id);
            if (!job.ok()) return Fail(job.status());
            std::cout << job->id() << " " << v1::JobState_Name(job->state()) << std::endl;
            return kExitOk;
          }};
}

Command AddJobs(CLI::App& app, CommonOptions&) {
  CLI::App* command = app.add_subcommand("jobs", "list audit jobs");
  return {command, [](const CommonOptions& common) {
            Client client = common.Connect();
            std::cout << absl::StrFormat("%-20s %-14s %-10s %9s  %-14s %s\n", "ID", "STATE",
                                         "MODEL", "SAMPLES", "VERDICT", "OWNER");
            v1::ListAuditsRequest request;
            do {  // every page, newest first
              absl::StatusOr<v1::ListAuditsResponse> page = client.ListAudits(request);
              if (!page.ok()) return Fail(page.status());
              for (const v1::AuditJob& job : page->jobs()) {
                std::cout << absl::StrFormat(
                    "%-20s %-14s %-10s %4d/%-4d  %-14s %s\n", job.id(),
                    v1::JobState_Name(job.state()), job.request().model(),
                    job.progress().samples_done(), job.progress().samples_total(),
                    job.state() == v1::JOB_SUCCEEDED ? VerdictWord(job.report().verdict()) : "",
                    job.owner());
              }
              request.set_page_token(page->next_page_token());
            } while (!request.page_token().empty());
            return kExitOk;
          }};
}

}  // namespace memaudit::client::cli
