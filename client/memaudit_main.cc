// memaudit: the command-line client of memaudit-server. The subcommands
// live in cli/; this file only assembles and dispatches them.
#include <CLI/CLI.hpp>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cli/commands.h"
#include "client/cli/common.h"
#include "client/targets.h"

namespace memaudit::client::cli {

int Main(int argc, char** argv) {
  CLI::App app{"memaudit: audit diffusion models for memorization (client of memaudit-server)"};
  app.require_subcommand(1);
  CommonOptions common;
  common.AddConnectionFlags(app);
  // The connection flags are accepted after the subcommand too
  // (`memaudit audit --server X ...`): subcommands made after this pass the
  // options they do not know up to the app.
  app.fallthrough();

  // In the order `memaudit --help` lists them.
  using AddCommand = Command (*)(CLI::App&, CommonOptions&);
  constexpr AddCommand kCommands[] = {
      AddHealth, AddModels,   AddLoad,  AddUnload, AddSample, AddSpectrum, AddAudit, AddCalibrate,
      AddEarly,  AddMitigate, AddWatch, AddGet,    AddCancel, AddJobs,     AddMerge, AddReport};
  std::vector<Command> commands;
  for (AddCommand add : kCommands) commands.push_back(add(app, common));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  absl::StatusOr<std::vector<Replica>> servers = ParseServerAddress(common.server);
  if (!servers.ok()) {
    return Fail(absl::InvalidArgumentError(absl::StrCat("--server: ", servers.status().message())));
  }
  if (absl::Status status = common.LoadSecurity(); !status.ok()) return Fail(status);
  for (const Command& command : commands) {
    if (!command.app->parsed()) continue;
    // Only an audit fans out; gRPC would take a list for a DNS name.
    const std::string& name = command.app->get_name();
    if (servers->size() > 1 && name != "audit" && name != "merge") {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "--server lists ", servers->size(), " servers; only `audit` fans out: give `", name,
          "` one (a shard's job is ADDRESS/ID)")));
    }
    return command.run(common);
  }
  return kExitUsage;  // unreachable: require_subcommand(1)
}

}  // namespace memaudit::client::cli

int main(int argc, char** argv) { return memaudit::client::cli::Main(argc, argv); }
