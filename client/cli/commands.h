// The memaudit CLI's subcommands. Each Add* function adds one subcommand to
// the app, with its flags bound to storage its action owns, and returns the
// action to run when parsing chose that subcommand.
//
// Exit codes (docs/SERVICE.md "CLI"): 0 success, 1 error (one readable line
// on stderr), 2 usage, 3 an audit reached the --fail-on level, 130
// interrupted.
#ifndef MEMAUDIT_CLIENT_CLI_COMMANDS_H_
#define MEMAUDIT_CLIENT_CLI_COMMANDS_H_

#include <CLI/CLI.hpp>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "client/client.h"
#include "client/html_report.h"

namespace memaudit::client::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitGate = 3;
inline constexpr int kExitInterrupted = 130;

// Flags several subcommands share. One instance outlives parsing and the
// run; a subcommand binds the ones it has (only one subcommand runs).
struct CommonOptions {
  std::string server = "127.0.0.1:8500";  // --server
  double timeout_seconds = 300;           // --timeout (unary calls; 0: none)
  // --keepalive (Client's keepalive, in seconds; 0: no pings)
  double keepalive_seconds = Client::kDefaultKeepalive.count() / 1000.0;
  bool json = false;   // --json: machine-readable output
  bool quiet = false;  // --quiet: no progress output
  // --tls, --tls-ca, --tls-cert, --tls-key, --tls-server-name, --token-file
  bool tls = false;
  std::string tls_ca, tls_cert, tls_key, tls_server_name, token_file;
  ChannelSecurity security;  // read from those files by LoadSecurity

  // Adds the connection flags above to `app` (each also read from an
  // environment variable, MEMAUDIT_TLS_CA etc.).
  void AddConnectionFlags(CLI::App& app);
  // Reads the files the connection flags name into `security`.
  absl::Status LoadSecurity();
  // A client of --server with the --timeout deadline, `security` and
  // --keepalive; of `address` instead when it is not empty.
  Client Connect(const std::string& address = "") const;
  std::chrono::milliseconds keepalive() const {
    return std::chrono::milliseconds(static_cast<int64_t>(keepalive_seconds * 1000));
  }
};

// The job a command's argument names, "ID" (on --server) or "ADDRESS/ID"
// (a fanned-out report's job_id lists its shards' jobs so; ParseJobRef),
// and a client of its server. INVALID_ARGUMENT for a malformed reference.
struct JobOnServer {
  Client client;
  std::string id;
};
absl::StatusOr<JobOnServer> ConnectToJob(const CommonOptions& common, const std::string& text);

struct Command {
  CLI::App* app;                                 // the subcommand
  std::function<int(const CommonOptions&)> run;  // returns the exit code
};

// Server and models (server_commands.cc).
Command AddHealth(CLI::App& app, CommonOptions& common);
Command AddModels(CLI::App& app, CommonOptions& common);
Command AddLoad(CLI::App& app, CommonOptions& common);
Command AddUnload(CLI::App& app, CommonOptions& common);

// Sampling and measurements (measure_commands.cc).
Command AddSample(CLI::App& app, CommonOptions& common);
Command AddSpectrum(CLI::App& app, CommonOptions& common);
Command AddCalibrate(CLI::App& app, CommonOptions& common);
Command AddEarly(CLI::App& app, CommonOptions& common);

// The guard against copying (mitigate_command.cc).
Command AddMitigate(CLI::App& app, CommonOptions& common);

// Audit jobs (audit_commands.cc).
Command AddAudit(CLI::App& app, CommonOptions& common);
Command AddWatch(CLI::App& app, CommonOptions& common);
Command AddGet(CLI::App& app, CommonOptions& common);
Command AddCancel(CLI::App& app, CommonOptions& common);
Command AddJobs(CLI::App& app, CommonOptions& common);
Command AddMerge(CLI::App& app, CommonOptions& common);
Command AddReport(CLI::App& app, CommonOptions& common);

// Writes the HTML page of job `job_id` (report_command.cc) to `path`,
// fetching its pictures from `client`; progress and notes on stderr unless
// `quiet`.
absl::Status WriteHtmlReport(Client& client, const std::string& job_id, const std::string& path,
                             const EvidenceOptions& options, bool quiet);
// --thumbnails, --no-spectra, --no-training-items.
void AddHtmlFlags(CLI::App* command, EvidenceOptions& options);

}  // namespace memaudit::client::cli

#endif  // MEMAUDIT_CLIENT_CLI_COMMANDS_H_
