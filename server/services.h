// The gRPC services: memaudit.v1.ModelService and memaudit.v1.AuditService
// (synchronous API). Handlers validate, then run heavy work on the server's
// request pool (never on gRPC's threads), watching the client's deadline and
// cancellation while they wait.
#ifndef MEMAUDIT_SERVER_SERVICES_H_
#define MEMAUDIT_SERVER_SERVICES_H_

#include <atomic>

#include "core/base/stop.h"
#include "memaudit/v1/audit_service.grpc.pb.h"
#include "memaudit/v1/model_service.grpc.pb.h"
#include "server/access_control.h"
#include "server/job_manager.h"
#include "server/metrics.h"
#include "server/model_registry.h"
#include "server/plans.h"
#include "server/request_memory.h"
#include "server/worker_pool.h"

namespace memaudit::server {

// Runs `work` on `pool` and waits for it, turning client cancellation and
// the deadline into the StopCheck `work` receives.
absl::Status RunOnPool(WorkerPool& pool, grpc::ServerContext* context,
                       std::function<absl::Status(const StopCheck&)> work);

class ModelServiceImpl final : public v1::ModelService::Service {
 public:
  // Every call is checked by `access` (RequiredRole) first.
  // GetTrainingItems answers only with `serve_training_items`
  // (FAILED_PRECONDITION otherwise), at most kMaxTrainingItems per call.
  static constexpr int kMaxTrainingItems = 64;
  ModelServiceImpl(ModelRegistry* registry, WorkerPool* pool, Metrics* metrics,
                   const AccessControl* access, bool serve_training_items = false)
      : registry_(registry),
        pool_(pool),
        metrics_(metrics),
        access_(access),
        serve_training_items_(serve_training_items) {}

  grpc::Status ListModels(grpc::ServerContext* context, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* response) override;
  grpc::Status GetModel(grpc::ServerContext* context, const v1::GetModelRequest* request,
                        v1::ModelInfo* response) override;
  grpc::Status LoadModel(grpc::ServerContext* context, const v1::LoadModelRequest* request,
                         v1::ModelInfo* response) override;
  grpc::Status UnloadModel(grpc::ServerContext* context, const v1::UnloadModelRequest* request,
                           v1::ModelInfo* response) override;
  grpc::Status GetTrainingItems(grpc::ServerContext* context,
                                const v1::GetTrainingItemsRequest* request,
                                v1::GetTrainingItemsResponse* response) override;

 private:
  ModelRegistry* registry_;
  WorkerPool* pool_;
  Metrics* metrics_;
  const AccessControl* access_;
  const bool serve_training_items_;
};

class AuditServiceImpl final : public v1::AuditService::Service {
 public:
  // At most `max_watch_streams` WatchAudit streams at once (each holds a
  // server thread); more are refused with RESOURCE_EXHAUSTED. Every call is
  // checked by `access` first; a caller with the audit role reads, watches,
  // lists and cancels only the jobs it submitted (PERMISSION_DENIED).
  // A request whose memory estimate (request_memory.h) does not fit in
  // `memory` (the per-request limit, and what a CUDA device has left) is
  // refused with RESOURCE_EXHAUSTED.
  //
  // Requests are planned (validated, prompts tokenized) on `planning_pool`,
  // so a slow tokenizer.json holds neither a gRPC thread past the caller's
  // deadline nor a worker of `pool` that heavy work is waiting for.
  AuditServiceImpl(ModelRegistry* registry, JobManager* jobs, WorkerPool* pool,
                   WorkerPool* planning_pool, Metrics* metrics, const AccessControl* access,
                   int max_watch_streams, MemoryBudget memory)
      : registry_(registry),
        jobs_(jobs),
        pool_(pool),
        planning_pool_(planning_pool),
        metrics_(metrics),
        access_(access),
        max_watch_streams_(max_watch_streams),
        memory_(std::move(memory)) {}

  grpc::Status Spectrum(grpc::ServerContext* context, const v1::SpectrumRequest* request,
                        v1::SpectrumResponse* response) override;
  grpc::Status Sample(grpc::ServerContext* context, const v1::SampleRequest* request,
                      v1::SampleResponse* response) override;
  grpc::Status StreamSamples(grpc::ServerContext* context, const v1::SampleRequest* request,
                             grpc::ServerWriter<v1::SampleResponse>* writer) override;
  grpc::Status EarlyMetrics(grpc::ServerContext* context, const v1::EarlyMetricsRequest* request,
                            v1::EarlyMetricsResponse* response) override;
  grpc::Status Mitigate(grpc::ServerContext* context, const v1::MitigateRequest* request,
                        grpc::ServerWriter<v1::MitigatedSample>* writer) override;
  grpc::Status Calibrate(grpc::ServerContext* context, const v1::CalibrationRequest* request,
                         v1::CalibrationResponse* response) override;
  grpc::Status SubmitAudit(grpc::ServerContext* context, const v1::AuditRequest* request,
                           v1::AuditJob* response) override;
  grpc::Status WatchAudit(grpc::ServerContext* context, const v1::WatchAuditRequest* request,
                          grpc::ServerWriter<v1::AuditEvent>* writer) override;
  grpc::Status GetAudit(grpc::ServerContext* context, const v1::GetAuditRequest* request,
                        v1::AuditJob* response) override;
  grpc::Status ListAudits(grpc::ServerContext* context, const v1::ListAuditsRequest* request,
                          v1::ListAuditsResponse* response) override;
  grpc::Status CancelAudit(grpc::ServerContext* context, const v1::CancelAuditRequest* request,
                           v1::AuditJob* response) override;

 private:
  // NOT_FOUND / UNAVAILABLE as ModelRegistry::Get; INVALID_ARGUMENT for "".
  absl::StatusOr<std::shared_ptr<const LoadedModel>> Model(const std::string& name) const;
  // Runs work(stop, &result) on the request pool; moves the result into
  // `response` when it succeeds.
  template <typename Response, typename Work>
  grpc::Status OnPool(grpc::ServerContext* context, Work work, Response* response);
  // The request's model and PlanX(request, model, stop), run on the
  // planning pool with `stop` bound to the call; LibTorch errors while
  // planning (device copies) included as INTERNAL.
  template <typename Request, typename Planner>
  auto PlanFor(grpc::ServerContext* context, const Request& request, Planner planner)
      -> decltype(planner(request, nullptr, StopCheck()));
  absl::StatusOr<SampleBatch> SamplesOnPool(grpc::ServerContext* context, const SamplePlan& plan,
                                            const std::vector<uint64_t>& seeds);

  ModelRegistry* registry_;
  JobManager* jobs_;
  WorkerPool* pool_;
  WorkerPool* planning_pool_;
  Metrics* metrics_;
  const AccessControl* access_;
  const int max_watch_streams_;
  const MemoryBudget memory_;
  std::atomic<int> watch_streams_{0};
};

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_SERVICES_H_
