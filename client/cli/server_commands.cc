// health, models, load, unload.
#include <iostream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "client/cli/commands.h"
#include "client/cli/common.h"
#include "client/report_format.h"

namespace memaudit::client::cli {
namespace {

// load and unload: the model's name and state after the call.
Command AddLoadOrUnload(CLI::App& app, const std::string& name, const std::string& description,
                        absl::StatusOr<v1::ModelInfo> (Client::*call)(const std::string&)) {
  auto model = std::make_shared<std::string>();
  CLI::App* command = app.add_subcommand(name, description);
  command->add_option("name", *model, "model")->required();
  return {command, [model, call](const CommonOptions& common) {
            Client client = common.Connect();
            absl::StatusOr<v1::ModelInfo> info = (client.*call)(*model);
            if (!info.ok()) return Fail(info.status());
            std::cout << info->name() << ": " << v1::ModelState_Name(info->state()) << std::endl;
            return kExitOk;
          }};
}

}  // namespace

Command AddHealth(CLI::App& app, CommonOptions&) {
  auto service = std::make_shared<std::string>();
  auto wait = std::make_shared<double>(0);
  CLI::App* command = app.add_subcommand("health", "grpc.health.v1 status (exit 1 unless SERVING)");
  command->add_option("--service", *service, "service name (default: the whole server)");
  command
      ->add_option("--wait", *wait,
                   "wait up to this many seconds for SERVING (also while the server is not "
                   "listening yet), then report")
      ->check(NonNegativeNumber());
  return {command, [service, wait](const CommonOptions& common) {
            Client client = common.Connect();
            if (*wait > 0) {
              const absl::Status ready = client.WaitUntilServing(
                  std::chrono::milliseconds(static_cast<int64_t>(*wait * 1000)), *service);
              if (!ready.ok()) return Fail(ready);
            }
            absl::StatusOr<std::string> status = client.Health(*service);
            if (status.status().code() == absl::StatusCode::kNotFound && !service->empty()) {
              // The health service's own words do not name what was asked.
              return Fail(absl::NotFoundError(absl::StrCat(
                  "--service \"", *service, "\": no such service or model/<name> entry")));
            }
            if (!status.ok()) return Fail(status.status());
            std::cout << *status << std::endl;
            return *status == "SERVING" ? kExitOk : kExitError;
          }};
}

Command AddModels(CLI::App& app, CommonOptions& common) {
  auto model = std::make_shared<std::string>();
  CLI::App* command = app.add_subcommand("models", "list models, or describe one");
  command->add_option("name", *model, "model to describe");
  command->add_flag("--json", common.json, "machine-readable output");
  return {command, [model](const CommonOptions& common) {
            Client client = common.Connect();
            // One model: its details (there is no --json form of them).
            if (!model->empty()) {
              absl::StatusOr<v1::ModelInfo> info = client.GetModel(*model);
              if (!info.ok()) return Fail(info.status());
              std::cout << ModelDetails(*info);
              return kExitOk;
            }
            absl::StatusOr<v1::ListModelsResponse> list = client.ListModels();
            if (!list.ok()) return Fail(list.status());
            PrintResult(common.json, *list, ModelsJson, ModelTable);
            return kExitOk;
          }};
}

Command AddLoad(CLI::App& app, CommonOptions&) {
  return AddLoadOrUnload(app, "load", "(re)load a model from the repository", &Client::LoadModel);
}

Command AddUnload(CLI::App& app, CommonOptions&) {
  return AddLoadOrUnload(app, "unload", "unload a model", &Client::UnloadModel);
}

}  // namespace memaudit::client::cli
