#include "server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "checkpoint.h"
#include "status_macros.h"

namespace memaudit::server {
namespace {
constexpr const char* kServiceNames[] = {"memaudit.v1.ModelService", "memaudit.v1.AuditService"};
constexpr int kMaxMessageBytes = 256 << 20;
}  // namespace

absl::StatusOr<std::unique_ptr<MemauditServer>> MemauditServer::Start(
    const ServerOptions& options) {
  // Configuration errors end the start, with the reason: a repository that
  // is not a readable directory, a device that cannot be used.
  std::error_code ec;
  if (!std::filesystem::is_directory(options.model_repository, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("--model_repository: \"", options.model_repository, "\" is not a directory"));
  }
  std::filesystem::directory_iterator listing(options.model_repository, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--model_repository: cannot read \"", options.model_repository, "\": ", ec.message()));
  }
  if (auto device = ParseDevice(options.device); !device.ok()) {
    return absl::Status(device.status().code(),
                        absl::StrCat("--device: ", device.status().message()));
  }
  std::unique_ptr<MemauditServer> server(new MemauditServer());
  server->options_ = options;
  server->metrics_ = std::make_unique<Metrics>();
  Metrics* metrics = server->metrics_.get();

  CheckpointOptions checkpoint_options;
  checkpoint_options.device = options.device;
  checkpoint_options.forward_observer = [metrics](int64_t rows, bool with_gradient) {
    metrics->CountNetworkEvaluations(with_gradient ? "curvature" : "sampling", rows);
  };
  server->registry_ = std::make_unique<ModelRegistry>(
      options.model_repository, checkpoint_options,
      [metrics](const std::string& model, bool ok, double seconds) {
        if (seconds > 0 || ok) metrics->ObserveModelLoad(model, ok, seconds);
        metrics->SetModelReady(model, ok);
      },
      options.max_dense_dimension);
  server->request_pool_ = std::make_unique<WorkerPool>(
      "request pool", options.max_concurrent_requests, options.max_queued_requests);
  JobManagerOptions job_options;
  job_options.max_concurrent_jobs = options.max_concurrent_jobs;
  job_options.max_queued_jobs = options.max_queued_jobs;
  job_options.max_finished_jobs_kept = options.max_finished_jobs;
  job_options.max_finished_job_bytes = options.max_finished_job_mib << 20;
  server->jobs_ = std::make_unique<JobManager>(server->registry_.get(), metrics, job_options);
  JobManager* jobs = server->jobs_.get();
  metrics->SetJobGauges([jobs] { return jobs->gauges(); });

  server->model_service_ = std::make_unique<ModelServiceImpl>(server->registry_.get(),
                                                              server->request_pool_.get(), metrics);
  server->audit_service_ =
      std::make_unique<AuditServiceImpl>(server->registry_.get(), jobs, server->request_pool_.get(),
                                         metrics, options.max_watch_streams);

  ASSIGN_OR_RETURN(server->metrics_port_, metrics->Serve(options.metrics_listen));

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // A port clash must be an error, not a silent split of traffic.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &server->grpc_port_);
  builder.RegisterService(server->model_service_.get());
  builder.RegisterService(server->audit_service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->grpc_port_ == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("--listen: cannot serve gRPC on ", options.listen, " (in use or invalid)"));
  }
  server->SetServing(false);
  ModelRegistry* registry = server->registry_.get();
  MemauditServer* self = server.get();
  server->loader_ = std::thread([registry, self] {
    const int failures = registry->LoadAll();
    if (failures > 0) {
      std::fprintf(stderr, "memaudit-server: %d model(s) failed to load; see ListModels\n",
                   failures);
    }
    self->SetServing(true);
  });
  return server;
}

MemauditServer::~MemauditServer() { Shutdown(absl::ZeroDuration()); }

void MemauditServer::WaitForInitialLoad() {
  if (loader_.joinable()) loader_.join();
}

void MemauditServer::SetServing(bool serving) {
  if (server_ == nullptr || server_->GetHealthCheckService() == nullptr) return;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus(serving);  // overall ("") and every service
  for (const char* service : kServiceNames) health->SetServingStatus(service, serving);
}

void MemauditServer::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
  WaitForInitialLoad();
  SetServing(false);
  request_pool_->Close();
  jobs_->Shutdown(grace);
  if (server_) {
    server_->GetHealthCheckService()->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
  }
  metrics_->StopServing();
}

}  // namespace memaudit::server
