#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/base/status_macros.h"
#include "core/checkpoint/load_model.h"
#include "server/request_memory.h"
#include "server/tls.h"

namespace memaudit::server {
namespace {
constexpr const char* kServiceNames[] = {"memaudit.v1.ModelService", "memaudit.v1.AuditService"};
constexpr int kMaxMessageBytes = 256 << 20;
// Threads of the planning pool (AuditServiceImpl): planning is light.
constexpr int kPlanningThreads = 2;
// The shortest keepalive interval clients may use (Client::kDefaultKeepalive
// is 20 s; the frozen-replica test uses 2 s).
constexpr int kMinClientPingIntervalMs = 500;

// Flag combinations that cannot work.
absl::Status CheckSecurityFlags(const ServerOptions& options) {
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  if (!options.tls_client_ca.empty() && options.tls_cert.empty()) {
    return absl::InvalidArgumentError("--tls_client_ca needs --tls_cert and --tls_key");
  }
  if (options.metrics_tls && options.tls_cert.empty()) {
    return absl::InvalidArgumentError("--metrics_tls needs --tls_cert and --tls_key");
  }
  if (options.metrics_require_token && options.token_file.empty()) {
    return absl::InvalidArgumentError("--metrics_require_token needs --token_file");
  }
  return absl::OkStatus();
}

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
  if (auto dtype = ParseDtype(options.dtype); !dtype.ok()) {
    return absl::Status(dtype.status().code(), absl::StrCat("--dtype: ", dtype.status().message()));
  }
  std::shared_ptr<grpc::ServerCredentials> credentials;
  RETURN_IF_ERROR(CheckSecurityFlags(options));
  if (!options.tls_cert.empty()) {
    ASSIGN_OR_RETURN(const TlsMaterial tls,
                     LoadTlsMaterial(options.tls_cert, options.tls_key, options.tls_client_ca));
    grpc::SslServerCredentialsOptions ssl(
        tls.client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                              : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    ssl.pem_root_certs = tls.client_ca;
    ssl.pem_key_cert_pairs.push_back({tls.private_key, tls.certificate_chain});
    credentials = grpc::SslServerCredentials(ssl);
  } else {
    credentials = grpc::InsecureServerCredentials();
  }
  std::unique_ptr<MemauditServer> server(new MemauditServer());
  server->options_ = options;
  if (!options.token_file.empty()) {
    auto tokens = TokenStore::Load(options.token_file);
    if (!tokens.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("--token_file: ", tokens.status().message()));
    }
    server->tokens_ = *std::move(tokens);
  }
  server->access_ = std::make_unique<AccessControl>(server->tokens_.get());
  server->metrics_ = std::make_unique<Metrics>();
  Metrics* metrics = server->metrics_.get();
  metrics->SetDevice(options.device);

  CheckpointOptions checkpoint_options;
  checkpoint_options.device = options.device;
  checkpoint_options.dtype = *ParseDtype(options.dtype);  // checked above
  checkpoint_options.forward_observer = [metrics](int64_t rows, bool with_gradient) {
    metrics->CountNetworkEvaluations(with_gradient ? "curvature" : "sampling", rows);
  };
  server->registry_ = std::make_unique<ModelRegistry>(
      options.model_repository, checkpoint_options,
      [metrics, self = server.get()](const std::string& model, bool ok, double seconds) {
        if (seconds > 0 || ok) metrics->ObserveModelLoad(model, ok, seconds);
        // A failed reload keeps the loaded version: ask the registry.
        const bool serving = self->registry_ != nullptr && self->registry_->Get(model).ok();
        metrics->SetModelReady(model, serving);
        self->SetModelServing(model, serving);
      },
      options.max_dense_dimension, options.model_load_timeout);
  server->host_memory_releaser_ = std::make_unique<HostMemoryReleaser>();
  server->request_pool_ = std::make_unique<WorkerPool>(
      "request pool", options.max_concurrent_requests, options.max_queued_requests);
  // Planning is light and bounded (Tokenizer::Encode's regex budget, the
  // caller's deadline); its own threads keep it from queueing behind
  // spectra, so a bad request is refused at once on a busy server.
  server->planning_pool_ =
      std::make_unique<WorkerPool>("planning pool", kPlanningThreads, options.max_queued_requests);
  JobManagerOptions job_options;
  job_options.max_concurrent_jobs = options.max_concurrent_jobs;
  job_options.max_queued_jobs = options.max_queued_jobs;
  job_options.max_finished_jobs_kept = options.max_finished_jobs;
  job_options.max_finished_job_bytes = options.max_finished_job_mib << 20;
  const int64_t max_request_bytes = options.max_request_memory_mib > 0
                                        ? options.max_request_memory_mib << 20
                                        : DefaultRequestMemoryLimitBytes();
  // The request's tensors live on the model's device: on CUDA, admission
  // also checks what that device has left.
  const MemoryBudget memory = MemoryBudget::ForDevice(max_request_bytes, options.device);
  job_options.memory = memory;
  job_options.max_finished_job_age = options.max_finished_job_age;
  if (!options.state_dir.empty()) {
    ASSIGN_OR_RETURN(server->store_, JobStore::Open(options.state_dir));
  }
  server->jobs_ = std::make_unique<JobManager>(server->registry_.get(), metrics, job_options,
                                               server->store_.get());
  JobManager* jobs = server->jobs_.get();
  if (server->store_ != nullptr) {
    absl::StatusOr<int> to_resume = jobs->Restore();
    if (!to_resume.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("--state_dir ", options.state_dir, ": ", to_resume.status().message()));
    }
    std::fprintf(stderr, "memaudit-server: job store %s: %lld job(s), %d to resume\n",
                 server->store_->path().c_str(), static_cast<long long>(jobs->gauges().stored_jobs),
                 *to_resume);
  }
  metrics->SetJobGauges([jobs] { return jobs->gauges(); });

  server->model_service_ = std::make_unique<ModelServiceImpl>(
      server->registry_.get(), server->request_pool_.get(), metrics, server->access_.get(),
      options.serve_training_items);
  server->audit_service_ = std::make_unique<AuditServiceImpl>(
      server->registry_.get(), jobs, server->request_pool_.get(), server->planning_pool_.get(),
      metrics, server->access_.get(), options.max_watch_streams, memory);

  Metrics::HttpOptions http;
  if (options.metrics_tls) {
    http.tls_cert_path = options.tls_cert;
    http.tls_key_path = options.tls_key;
  }
  if (options.metrics_require_token) {
    const TokenStore* tokens = server->tokens_.get();
    http.authorize = [tokens](const std::string& authorization) {
      return tokens->Authenticate(authorization).ok();
    };
  }
  http.ready = [self = server.get()] { return self->serving_.load(); };
  ASSIGN_OR_RETURN(server->metrics_port_, metrics->Serve(options.metrics_listen, http));

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // A port clash must be an error, not a silent split of traffic.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Clients ping long calls (a watch may carry no event for minutes) to
  // notice a frozen or partitioned server; gRPC's default would answer
  // pings more often than every 5 minutes with GOAWAY (too_many_pings).
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             kMinClientPingIntervalMs);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  builder.AddListeningPort(options.listen, credentials, &server->grpc_port_);
  builder.RegisterService(server->model_service_.get());
  builder.RegisterService(server->audit_service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->grpc_port_ == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("--listen: cannot serve gRPC on ", options.listen, " (in use or invalid)"));
  }
  server->health_ = server->server_->GetHealthCheckService();
  server->SetServing(false);
  ModelRegistry* registry = server->registry_.get();
  MemauditServer* self = server.get();
  for (const std::string& name : registry->ScanRepository()) metrics->RegisterModel(name);
  server->loader_ = std::thread([registry, self, jobs] {
    const int failures = [&] {
      HostWork loading;  // the loads' peak is released once they end
      return registry->LoadAll();
    }();
    if (failures > 0) {
      std::fprintf(stderr, "memaudit-server: %d model(s) failed to load; see ListModels\n",
                   failures);
    }
    jobs->ResumeInterrupted();  // their models are loaded now
    self->SetServing(true);
  });
  return server;
}

absl::StatusOr<int> MemauditServer::ReloadTokens() {
  if (tokens_ == nullptr) {
    return absl::FailedPreconditionError("no --token_file: this server does not check tokens");
  }
  return tokens_->Reload();
}

MemauditServer::~MemauditServer() { Shutdown(absl::ZeroDuration()); }

void MemauditServer::WaitForInitialLoad() {
  if (loader_.joinable()) loader_.join();
}

void MemauditServer::SetServing(bool serving) {
  serving_ = serving;
  if (server_ == nullptr || server_->GetHealthCheckService() == nullptr) return;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  // Not SetServingStatus(serving): that would set every model's entry too.
  health->SetServingStatus("", serving);
  for (const char* service : kServiceNames) health->SetServingStatus(service, serving);
}

void MemauditServer::SetModelServing(const std::string& model, bool serving) {
  grpc::HealthCheckServiceInterface* health = health_.load();
  if (health != nullptr) health->SetServingStatus("model/" + model, serving);
}

void MemauditServer::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
  WaitForInitialLoad();
  SetServing(false);
  // A start that failed half-way destroys a server with parts missing.
  if (request_pool_) request_pool_->Close();
  if (planning_pool_) planning_pool_->Close();
  if (jobs_) jobs_->Shutdown(grace);
  if (server_) {
    server_->GetHealthCheckService()->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
  }
  if (metrics_) metrics_->StopServing();
}

}  // namespace memaudit::server
