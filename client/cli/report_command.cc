// report: an audit as one self-contained HTML page (html_report.h), from
// a --json report or a job id; and the --html of audit.
#include <cstdio>
#include <fstream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "client/cli/commands.h"
#include "client/cli/common.h"
#include "client/html_report.h"
#include "client/sample_files.h"

namespace memaudit::client::cli {

absl::Status WriteHtmlReport(Client& client, const std::string& job_id, const std::string& path,
                             const EvidenceOptions& options, bool quiet) {
  absl::StatusOr<v1::AuditJob> job = client.GetAudit(job_id);
  if (!job.ok()) return job.status();
  absl::StatusOr<v1::ModelInfo> model = client.GetModel(job->report().model());
  if (!model.ok()) return model.status();
  absl::StatusOr<ReportEvidence> evidence =
      FetchReportEvidence(client, *job, *model, options, [quiet](const std::string& line) {
        if (!quiet) std::fprintf(stderr, "report: %s\n", line.c_str());
      });
  if (!evidence.ok()) return evidence.status();
  const std::string html = AuditReportHtml(*job, *evidence);
  if (absl::Status written = WriteOutputFile(path, html); !written.ok()) return written;
  if (!quiet) {
    std::fprintf(stderr, "report: wrote %s (%zu bytes)\n", path.c_str(), html.size());
    for (const std::string& note : evidence->notes) {
      std::fprintf(stderr, "report: note: %s\n", note.c_str());
    }
  }
  return absl::OkStatus();
}

void AddHtmlFlags(CLI::App* command, EvidenceOptions& options) {
  command
      ->add_option("--thumbnails", options.thumbnails,
                   "HTML: samples shown per condition, flagged ones first")
      ->capture_default_str()
      ->check(NonNegativeNumber());
  command->add_flag("!--no-spectra", options.spectra, "HTML: no spectrum plot per condition");
  command->add_flag("!--no-training-items", options.training_items,
                    "HTML: do not ask for the training items copies are nearest to");
}

namespace {

struct ReportCommandFlags {
  std::string from;  // --from report.json
  std::string id;    // --id
  std::string html;
  EvidenceOptions evidence;
};

int RunReport(const CommonOptions& common, const ReportCommandFlags& flags) {
  std::string id = flags.id;
  if (!flags.from.empty()) {
    std::ifstream in(flags.from);
    if (!in) return Fail(absl::NotFoundError(absl::StrCat(flags.from, ": cannot read")));
    nlohmann::json json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded() || !json.is_object() || !json.contains("job_id") ||
        !json["job_id"].is_string()) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat(flags.from, ": not the --json report of an audit (no \"job_id\")")));
    }
    id = json["job_id"].get<std::string>();
    if (id.find(',') != std::string::npos) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          flags.from, ": the report of a fanned-out or merged audit names several jobs (", id,
          "); make each shard's page with --id ADDRESS/ID")));
    }
  }
  absl::StatusOr<JobOnServer> job = ConnectToJob(common, id);
  if (!job.ok()) return Fail(job.status());
  if (absl::Status written =
          WriteHtmlReport(job->client, job->id, flags.html, flags.evidence, common.quiet);
      !written.ok()) {
    return Fail(written);
  }
  return kExitOk;
}

}  // namespace

Command AddReport(CLI::App& app, CommonOptions& common) {
  auto flags = std::make_shared<ReportCommandFlags>();
  CLI::App* command = app.add_subcommand(
      "report",
      "an audit as one self-contained HTML page (samples, copies beside their training items, "
      "spectra), fetched from the server");
  CLI::Option* from =
      command->add_option("--from", flags->from, "the audit's --json report (names its job)");
  CLI::Option* id =
      command->add_option("--id", flags->id, "the audit's job id, or ADDRESS/ID (one shard's)");
  from->excludes(id);
  command->add_option("--html", flags->html, "write the page here")->required();
  command->add_flag("--quiet", common.quiet, "no progress output");
  AddHtmlFlags(command, flags->evidence);
  return {command, [flags, from, id](const CommonOptions& common) {
            if (from->count() == 0 && id->count() == 0) {
              return Fail(absl::InvalidArgumentError("give --from REPORT.json or --id JOB"));
            }
            return RunReport(common, *flags);
          }};
}

}  // namespace memaudit::client::cli
