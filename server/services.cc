#include "server/services.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "core/audit/sample_curvature.h"
#include "core/base/status_macros.h"
#include "core/checkpoint/latent_decoder.h"
#include "core/early/early_metrics.h"
#include "core/model/sampler.h"
#include "server/calibration_runner.h"
#include "server/grpc_status.h"
#include "server/mitigation_runner.h"
#include "server/plans.h"
#include "server/request_memory.h"
#include "server/tensor_codec.h"

namespace memaudit::server {
namespace {

// Checks the caller's token and role for `method`, runs handler(caller),
// and records the call by method and code (refused calls included).
template <typename Handler>
grpc::Status Handle(Metrics* metrics, const AccessControl& access, grpc::ServerContext* context,
                    const char* method, Handler&& handler) {
  const auto start = std::chrono::steady_clock::now();
  absl::string_view authorization;
  const auto& metadata = context->client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    authorization = absl::string_view(it->second.data(), it->second.size());
  }
  absl::StatusOr<Caller> caller = access.Authorize(method, authorization);
  grpc::Status status = caller.ok() ? handler(*caller) : ToGrpcStatus(caller.status());
  if (metrics != nullptr) {
    metrics->ObserveRpc(
        method, absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())),
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return status;
}

// PERMISSION_DENIED unless `caller` may read or cancel a job of `owner`.
absl::Status MayAccess(const Caller& caller, const std::string& owner, const std::string& id) {
  if (caller.MayAccessJobOf(owner)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat("audit ", id, " belongs to another caller; \"",
                                                  caller.name,
                                                  "\" (role audit) may access only its own jobs"));
}

// StreamSamples samples this many seeds at a time: samples reach the client
// as they are done, and the request pool is shared between batches.
constexpr int64_t kStreamBatch = 8;

absl::Status RequireModelName(const std::string& name) {
  return name.empty() ? absl::InvalidArgumentError("model: required") : absl::OkStatus();
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The spectrum of a planned Spectrum request, encoded.
absl::Status RunSpectrum(const SpectrumPlan& plan, const StopCheck& stop, Metrics* metrics,
                         v1::SpectrumResponse* response) {
  const auto start = std::chrono::steady_clock::now();
  const Denoiser& denoiser = *plan.model->denoiser;
  auto curvature_start = start;
  auto on_progress = [&](const SampleCurvatureProgress& p) {
    if (p.phase == MeasurePhase::kSampling) curvature_start = std::chrono::steady_clock::now();
  };
  Spectrum spectrum;
  at::Tensor point;
  if (plan.seed.has_value()) {
    ASSIGN_OR_RETURN(std::vector<SampleCurvature> measured,
                     MeasureSamples(denoiser, {*plan.seed}, plan.condition.row, plan.curvature,
                                    nullptr, stop, on_progress));
    spectrum = std::move(measured.front().spectra.front());
    if (plan.return_point) point = measured.front().points.front();
  } else {
    ASSIGN_OR_RETURN(
        std::vector<Spectrum> spectra,
        SpectraAt(denoiser, plan.x, plan.timestep, plan.condition.row, plan.curvature, stop));
    spectrum = std::move(spectra.front());
    point = plan.x[0];
  }
  if (metrics != nullptr) {
    metrics->ObserveSpectrum(SpectrumMethodName(spectrum.method), SecondsSince(curvature_start));
  }
  response->set_model(plan.model->network->config().name());
  response->set_timestep(spectrum.t);
  response->set_sigma(spectrum.sigma);
  response->set_symmetrized(spectrum.symmetrized);
  response->set_method(ToProtoMethod(spectrum.method));
  response->set_matvecs(spectrum.matvecs);
  response->set_requested_eigenvalues(spectrum.requested);
  response->set_converged(spectrum.converged);
  for (const auto& lambda : spectrum.eigenvalues) {
    response->add_eigenvalues_real(lambda.real());
    response->add_eigenvalues_imag(lambda.imag());
  }
  ToSummaryProto(spectrum.summary, response->mutable_summary());
  if (plan.return_point) EncodeTensor(point.to(at::kCPU), response->mutable_point());
  if (plan.early.has_value()) {
    ASSIGN_OR_RETURN(
        const EarlyMetricSamples early,
        ComputeEarlyMetrics(denoiser, {*plan.seed}, plan.condition.row, *plan.early, stop));
    ToEarlyMetricsProto(early, response->mutable_early());
  }
  response->set_seconds(SecondsSince(start));
  return absl::OkStatus();
}

// Samples of `seeds` (a subset of the plan's) as float32 on the CPU, and
// their images when the plan decodes.
absl::StatusOr<SampleBatch> RunSamples(const SamplePlan& plan, const std::vector<uint64_t>& seeds,
                                       const StopCheck& stop) {
  ASSIGN_OR_RETURN(
      const Trajectory trajectory,
      SampleTrajectories(*plan.model->denoiser, seeds,
                         RepeatCondition(plan.condition, static_cast<int64_t>(seeds.size())),
                         plan.sampler, stop));
  SampleBatch batch;
  batch.samples = trajectory.final_sample.to(at::kCPU, at::kFloat);
  if (plan.decode) {
    RETURN_IF_ERROR(CheckStop(stop));
    ASSIGN_OR_RETURN(batch.images,
                     plan.model->network->latent_decoder()->Decode(trajectory.final_sample));
  }
  return batch;
}

}  // namespace

absl::Status RunOnPool(WorkerPool& pool, grpc::ServerContext* context,
                       std::function<absl::Status(const StopCheck&)> work) {
  struct Shared {
    absl::Notification done;
    absl::Status status;
    std::atomic<bool> abandoned{false};
  };
  auto shared = std::make_shared<Shared>();
  const auto deadline = context->deadline();
  StopCheck stop = [shared, deadline]() -> absl::Status {
    if (shared->abandoned.load()) return absl::CancelledError("the client cancelled the call");
    if (std::chrono::system_clock::now() > deadline) {
      return absl::DeadlineExceededError("the client's deadline passed");
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(pool.Submit([shared, work = std::move(work), stop] {
    try {
      shared->status = work(stop);
    } catch (const std::exception& e) {
      // LibTorch throws c10::Error (e.g. out of memory): fail the call, not
      // the server.
      shared->status = absl::InternalError(absl::StrCat("unexpected error: ", e.what()));
    }
    shared->done.Notify();
  }));
  while (!shared->done.WaitForNotificationWithTimeout(absl::Milliseconds(50))) {
    if (context->IsCancelled()) shared->abandoned = true;
  }
  if (context->IsCancelled() && shared->status.ok()) {
    return absl::CancelledError("the client cancelled the call");
  }
  return shared->status;
}

namespace {

// RunOnPool for work that computes a value: its result, or RunOnPool's
// status (queue full, cancelled, a LibTorch exception).
template <typename Work>
auto ValueOnPool(WorkerPool& pool, grpc::ServerContext* context, Work work)
    -> decltype(work(StopCheck())) {
  decltype(work(StopCheck())) result = absl::UnknownError("not run");
  RETURN_IF_ERROR(RunOnPool(pool, context, [&](const StopCheck& stop) {
    result = work(stop);
    return absl::OkStatus();
  }));
  return result;
}

}  // namespace

// ---------------------------------------------------------------- models

grpc::Status ModelServiceImpl::ListModels(grpc::ServerContext* context,
                                          const v1::ListModelsRequest*,
                                          v1::ListModelsResponse* response) {
  return Handle(metrics_, *access_, context, "ModelService/ListModels", [&](const Caller& caller) {
    for (v1::ModelInfo& info : registry_->List()) *response->add_models() = std::move(info);
    return grpc::Status::OK;
  });
}

grpc::Status ModelServiceImpl::GetModel(grpc::ServerContext* context,
                                        const v1::GetModelRequest* request,
                                        v1::ModelInfo* response) {
  return Handle(metrics_, *access_, context, "ModelService/GetModel", [&](const Caller& caller) {
    if (absl::Status s = RequireModelName(request->name()); !s.ok()) return ToGrpcStatus(s);
    auto info = registry_->Info(request->name());
    if (!info.ok()) return ToGrpcStatus(info.status());
    *response = *std::move(info);
    return grpc::Status::OK;
  });
}

grpc::Status ModelServiceImpl::LoadModel(grpc::ServerContext* context,
                                         const v1::LoadModelRequest* request,
                                         v1::ModelInfo* response) {
  return Handle(metrics_, *access_, context, "ModelService/LoadModel", [&](const Caller& caller) {
    if (absl::Status s = RequireModelName(request->name()); !s.ok()) return ToGrpcStatus(s);
    const std::string name = request->name();
    v1::ModelInfo info;
    absl::Status status = RunOnPool(*pool_, context, [this, name, &info](const StopCheck&) {
      // A model added to the repository since the start gets its series
      // before its first load (names outside the repository get none).
      if (metrics_ != nullptr && registry_->ExistsInRepository(name)) {
        metrics_->RegisterModel(name);
      }
      ASSIGN_OR_RETURN(info, registry_->Load(name));
      return absl::OkStatus();
    });
    if (!status.ok()) return ToGrpcStatus(status);
    *response = std::move(info);
    return grpc::Status::OK;
  });
}

grpc::Status ModelServiceImpl::UnloadModel(grpc::ServerContext* context,
                                           const v1::UnloadModelRequest* request,
                                           v1::ModelInfo* response) {
  return Handle(metrics_, *access_, context, "ModelService/UnloadModel", [&](const Caller& caller) {
    if (absl::Status s = RequireModelName(request->name()); !s.ok()) return ToGrpcStatus(s);
    auto info = registry_->Unload(request->name());
    if (!info.ok()) return ToGrpcStatus(info.status());
    *response = *std::move(info);
    return grpc::Status::OK;
  });
}

grpc::Status ModelServiceImpl::GetTrainingItems(grpc::ServerContext* context,
                                                const v1::GetTrainingItemsRequest* request,
                                                v1::GetTrainingItemsResponse* response) {
  return Handle(metrics_, *access_, context, "ModelService/GetTrainingItems", [&](const Caller&) {
    if (!serve_training_items_) {
      return ToGrpcStatus(absl::FailedPreconditionError(
          "training items are not served: the server runs without --serve_training_items"));
    }
    if (absl::Status s = RequireModelName(request->model()); !s.ok()) return ToGrpcStatus(s);
    absl::StatusOr<std::shared_ptr<const LoadedModel>> model = registry_->Get(request->model());
    if (!model.ok()) return ToGrpcStatus(model.status());
    if (!(*model)->reference.has_value()) {
      return ToGrpcStatus(absl::FailedPreconditionError(
          absl::StrCat("model \"", request->model(), "\" has no reference set (",
                       ReferenceSet::kFileName, ")")));
    }
    const at::Tensor& items = (*model)->reference->items();
    if (request->indices_size() < 1 || request->indices_size() > kMaxTrainingItems) {
      return ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
          "indices: give 1 to ", kMaxTrainingItems, ", not ", request->indices_size())));
    }
    std::vector<int64_t> indices(request->indices().begin(), request->indices().end());
    for (size_t i = 0; i < indices.size(); ++i) {
      if (indices[i] < 0 || indices[i] >= items.size(0)) {
        return ToGrpcStatus(absl::InvalidArgumentError(
            absl::StrCat("indices[", i, "]: ", indices[i], " is outside the reference set [0, ",
                         items.size(0), ")")));
      }
    }
    at::Tensor chosen = items.index_select(0, at::tensor(indices, at::kLong));
    const LatentDecoder* decoder = (*model)->network->latent_decoder();
    const bool decode = !(*model)->reference_holds_images && decoder != nullptr;
    if (decode) {
      const std::shared_ptr<const LoadedModel> held = *model;
      absl::Status status = RunOnPool(*pool_, context, [&](const StopCheck& stop) {
        RETURN_IF_ERROR(CheckStop(stop));
        ASSIGN_OR_RETURN(
            chosen, decoder->Decode(chosen.to(held->network->device(), held->network->dtype())));
        return absl::OkStatus();
      });
      if (!status.ok()) return ToGrpcStatus(status);
    }
    for (int64_t i = 0; i < chosen.size(0); ++i) {
      EncodeTensor(chosen[i].to(at::kCPU, at::kFloat).contiguous(), response->add_items());
    }
    response->set_decoded(decode);
    return grpc::Status::OK;
  });
}

// ---------------------------------------------------------------- audits

absl::StatusOr<std::shared_ptr<const LoadedModel>> AuditServiceImpl::Model(
    const std::string& name) const {
  RETURN_IF_ERROR(RequireModelName(name));
  return registry_->Get(name);
}

template <typename Request, typename Planner>
auto AuditServiceImpl::PlanFor(grpc::ServerContext* context, const Request& request,
                               Planner planner)
    -> decltype(planner(request, nullptr, StopCheck())) {
  ASSIGN_OR_RETURN(std::shared_ptr<const LoadedModel> model, Model(request.model()));
  return ValueOnPool(*planning_pool_, context, [&](const StopCheck& stop) {
    return PlanNoThrow([&] { return planner(request, std::move(model), stop); });
  });
}

template <typename Response, typename Work>
grpc::Status AuditServiceImpl::OnPool(grpc::ServerContext* context, Work work, Response* response) {
  Response result;
  absl::Status status =
      RunOnPool(*pool_, context, [&](const StopCheck& stop) { return work(stop, &result); });
  if (status.ok()) *response = std::move(result);
  return ToGrpcStatus(status);
}

grpc::Status AuditServiceImpl::Spectrum(grpc::ServerContext* context,
                                        const v1::SpectrumRequest* request,
                                        v1::SpectrumResponse* response) {
  return Handle(metrics_, *access_, context, "AuditService/Spectrum", [&](const Caller& caller) {
    auto plan = PlanFor(context, *request, PlanSpectrum);
    if (!plan.ok()) return ToGrpcStatus(plan.status());
    if (absl::Status s = memory_.Check(EstimateSpectrum(*plan), "this spectrum"); !s.ok()) {
      return ToGrpcStatus(s);
    }
    return OnPool(
        context,
        [&](const StopCheck& stop, v1::SpectrumResponse* result) {
          return RunSpectrum(*plan, stop, metrics_, result);
        },
        response);
  });
}

absl::StatusOr<SampleBatch> AuditServiceImpl::SamplesOnPool(grpc::ServerContext* context,
                                                            const SamplePlan& plan,
                                                            const std::vector<uint64_t>& seeds) {
  return ValueOnPool(*pool_, context,
                     [&](const StopCheck& stop) { return RunSamples(plan, seeds, stop); });
}

grpc::Status AuditServiceImpl::Sample(grpc::ServerContext* context,
                                      const v1::SampleRequest* request,
                                      v1::SampleResponse* response) {
  return Handle(metrics_, *access_, context, "AuditService/Sample", [&](const Caller& caller) {
    auto plan = PlanFor(context, *request, PlanSample);
    if (!plan.ok()) return ToGrpcStatus(plan.status());
    if (absl::Status s = memory_.Check(
            EstimateSample(*plan, static_cast<int64_t>(plan->seeds.size())), "this sample request");
        !s.ok()) {
      return ToGrpcStatus(s);
    }
    auto samples = SamplesOnPool(context, *plan, plan->seeds);
    if (!samples.ok()) return ToGrpcStatus(samples.status());
    *response->mutable_seeds() = request->seeds();
    EncodeTensor(samples->samples, response->mutable_samples());
    if (samples->images.defined()) EncodeTensor(samples->images, response->mutable_images());
    return grpc::Status::OK;
  });
}

grpc::Status AuditServiceImpl::StreamSamples(grpc::ServerContext* context,
                                             const v1::SampleRequest* request,
                                             grpc::ServerWriter<v1::SampleResponse>* writer) {
  return Handle(
      metrics_, *access_, context, "AuditService/StreamSamples", [&](const Caller& caller) {
        auto plan = PlanFor(context, *request, PlanSample);
        if (!plan.ok()) return ToGrpcStatus(plan.status());
        if (absl::Status s = memory_.Check(
                EstimateSample(*plan, std::min<int64_t>(kStreamBatch, plan->seeds.size())),
                "this sample stream");
            !s.ok()) {
          return ToGrpcStatus(s);
        }
        // Batches of seeds: samples reach the client as they are done, and the
        // request pool is shared with other calls between batches.
        constexpr size_t kBatch = static_cast<size_t>(kStreamBatch);
        for (size_t first = 0; first < plan->seeds.size(); first += kBatch) {
          const size_t count = std::min(kBatch, plan->seeds.size() - first);
          const std::vector<uint64_t> seeds(plan->seeds.begin() + first,
                                            plan->seeds.begin() + first + count);
          auto samples = SamplesOnPool(context, *plan, seeds);
          if (!samples.ok()) return ToGrpcStatus(samples.status());
          for (size_t i = 0; i < count; ++i) {
            v1::SampleResponse response;
            response.add_seeds(seeds[i]);
            const int64_t row = static_cast<int64_t>(i);
            EncodeTensor(samples->samples.narrow(0, row, 1), response.mutable_samples());
            if (samples->images.defined()) {
              EncodeTensor(samples->images.narrow(0, row, 1), response.mutable_images());
            }
            if (!writer->Write(response)) {
              return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
            }
          }
        }
        return grpc::Status::OK;
      });
}

grpc::Status AuditServiceImpl::EarlyMetrics(grpc::ServerContext* context,
                                            const v1::EarlyMetricsRequest* request,
                                            v1::EarlyMetricsResponse* response) {
  return Handle(
      metrics_, *access_, context, "AuditService/EarlyMetrics", [&](const Caller& caller) {
        auto plan = PlanFor(context, *request, PlanEarlyMetrics);
        if (!plan.ok()) return ToGrpcStatus(plan.status());
        if (absl::Status s =
                memory_.Check(EstimateEarlyMetrics(*plan), "this early-metrics request");
            !s.ok()) {
          return ToGrpcStatus(s);
        }
        return OnPool(
            context,
            [&](const StopCheck& stop, v1::EarlyMetricsResponse* result) -> absl::Status {
              const auto start = std::chrono::steady_clock::now();
              ASSIGN_OR_RETURN(
                  const EarlyMetricSamples metrics,
                  ComputeEarlyMetrics(
                      *plan->model->denoiser, plan->seeds,
                      RepeatCondition(plan->condition, static_cast<int64_t>(plan->seeds.size())),
                      plan->options, stop));
              ToEarlyMetricsProto(metrics, result);
              result->set_seconds(SecondsSince(start));
              return absl::OkStatus();
            },
            response);
      });
}

grpc::Status AuditServiceImpl::Mitigate(grpc::ServerContext* context,
                                        const v1::MitigateRequest* request,
                                        grpc::ServerWriter<v1::MitigatedSample>* writer) {
  return Handle(metrics_, *access_, context, "AuditService/Mitigate", [&](const Caller& caller) {
    auto plan = PlanFor(context, *request, PlanMitigate);
    if (!plan.ok()) return ToGrpcStatus(plan.status());
    const size_t per_batch = static_cast<size_t>(kMitigationSeedsPerBatch);
    if (absl::Status s = memory_.Check(
            EstimateMitigate(*plan, std::min(per_batch, plan->seeds.size())), "this mitigation");
        !s.ok()) {
      return ToGrpcStatus(s);
    }
    // Batches of seeds: each seed's result reaches the client when its
    // batch is done, and the request pool is shared between batches.
    for (size_t first = 0; first < plan->seeds.size(); first += per_batch) {
      if (context->IsCancelled()) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the call");
      }
      const size_t count = std::min(per_batch, plan->seeds.size() - first);
      const std::vector<uint64_t> seeds(plan->seeds.begin() + first,
                                        plan->seeds.begin() + first + count);
      std::vector<v1::MitigatedSample> results;
      absl::Status status = RunOnPool(*pool_, context, [&](const StopCheck& stop) -> absl::Status {
        ASSIGN_OR_RETURN(results, RunMitigation(*plan, seeds, stop));
        return absl::OkStatus();
      });
      if (!status.ok()) return ToGrpcStatus(status);
      for (const v1::MitigatedSample& result : results) {
        if (!writer->Write(result)) {
          return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
        }
      }
    }
    return grpc::Status::OK;
  });
}

grpc::Status AuditServiceImpl::Calibrate(grpc::ServerContext* context,
                                         const v1::CalibrationRequest* request,
                                         v1::CalibrationResponse* response) {
  return Handle(metrics_, *access_, context, "AuditService/Calibrate", [&](const Caller& caller) {
    auto plan = PlanFor(context, *request, PlanCalibration);
    if (!plan.ok()) return ToGrpcStatus(plan.status());
    if (absl::Status s = memory_.Check(EstimateCalibration(*plan), "this calibration"); !s.ok()) {
      return ToGrpcStatus(s);
    }
    return OnPool(
        context,
        [&](const StopCheck& stop, v1::CalibrationResponse* result) -> absl::Status {
          ASSIGN_OR_RETURN(*result, RunCalibration(*plan, stop));
          return absl::OkStatus();
        },
        response);
  });
}

grpc::Status AuditServiceImpl::SubmitAudit(grpc::ServerContext* context,
                                           const v1::AuditRequest* request,
                                           v1::AuditJob* response) {
  return Handle(metrics_, *access_, context, "AuditService/SubmitAudit", [&](const Caller& caller) {
    absl::StatusOr<v1::AuditJob> job = absl::UnknownError("not run");
    const absl::Status ran = RunOnPool(*planning_pool_, context, [&](const StopCheck& stop) {
      job = jobs_->Submit(*request, caller.name, stop);
      return absl::OkStatus();
    });
    // Created, but the caller went away or its deadline passed while the job
    // was saved: it never learns the id, so the job is cancelled, not left
    // to hold a slot for nobody.
    const bool caller_gone =
        context->IsCancelled() || std::chrono::system_clock::now() > context->deadline();
    if (job.ok() && (!ran.ok() || caller_gone)) {
      (void)jobs_->Cancel(job->id());
      return ToGrpcStatus(
          !ran.ok() ? ran
                    : absl::DeadlineExceededError("the client's deadline passed as the audit was "
                                                  "queued; it was cancelled"));
    }
    if (!ran.ok()) return ToGrpcStatus(ran);
    if (!job.ok()) return ToGrpcStatus(job.status());
    *response = *std::move(job);
    return grpc::Status::OK;
  });
}

grpc::Status AuditServiceImpl::WatchAudit(grpc::ServerContext* context,
                                          const v1::WatchAuditRequest* request,
                                          grpc::ServerWriter<v1::AuditEvent>* writer) {
  return Handle(metrics_, *access_, context, "AuditService/WatchAudit", [&](const Caller& caller) {
    // Each stream holds a server thread while it waits for events.
    struct StreamSlot {
      std::atomic<int>& count;
      ~StreamSlot() { --count; }
    } slot{watch_streams_};
    if (++watch_streams_ > max_watch_streams_) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat("more than ", max_watch_streams_,
                                       " WatchAudit streams are open (server flag "
                                       "--max_watch_streams); poll GetAudit or retry later"));
    }
    auto job = jobs_->Find(request->id());
    if (!job.ok()) return ToGrpcStatus(job.status());
    if (absl::Status s = MayAccess(caller, (*job)->owner, request->id()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    size_t next = 0;
    while (true) {
      if (context->IsCancelled()) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the watch");
      }
      if (std::chrono::system_clock::now() > context->deadline()) {
        return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "watch deadline passed");
      }
      bool finished = false;
      const std::vector<v1::AuditEvent> events =
          jobs_->Events(*job, next, absl::Milliseconds(200), &finished);
      for (const v1::AuditEvent& event : events) {
        if (!writer->Write(event)) {
          return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
        }
      }
      next += events.size();
      // The final event is the last one of a finished job.
      if (finished && (events.empty() || events.back().has_finished())) {
        return grpc::Status::OK;
      }
    }
  });
}

grpc::Status AuditServiceImpl::GetAudit(grpc::ServerContext* context,
                                        const v1::GetAuditRequest* request,
                                        v1::AuditJob* response) {
  return Handle(metrics_, *access_, context, "AuditService/GetAudit", [&](const Caller& caller) {
    auto job = jobs_->Get(request->id());
    if (!job.ok()) return ToGrpcStatus(job.status());
    if (absl::Status s = MayAccess(caller, job->owner(), request->id()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    *response = *std::move(job);
    return grpc::Status::OK;
  });
}

grpc::Status AuditServiceImpl::ListAudits(grpc::ServerContext* context,
                                          const v1::ListAuditsRequest* request,
                                          v1::ListAuditsResponse* response) {
  return Handle(metrics_, *access_, context, "AuditService/ListAudits", [&](const Caller& caller) {
    JobManager::ListQuery query;
    if (caller.role != Role::kAdmin) query.owner = caller.name;
    query.page_size = request->page_size();
    query.page_token = request->page_token();
    auto page = jobs_->List(query);
    if (!page.ok()) return ToGrpcStatus(page.status());
    for (v1::AuditJob& job : page->jobs) *response->add_jobs() = std::move(job);
    response->set_next_page_token(page->next_page_token);
    return grpc::Status::OK;
  });
}

grpc::Status AuditServiceImpl::CancelAudit(grpc::ServerContext* context,
                                           const v1::CancelAuditRequest* request,
                                           v1::AuditJob* response) {
  return Handle(metrics_, *access_, context, "AuditService/CancelAudit", [&](const Caller& caller) {
    auto held = jobs_->Find(request->id());
    if (!held.ok()) return ToGrpcStatus(held.status());
    if (absl::Status s = MayAccess(caller, (*held)->owner, request->id()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    auto job = jobs_->Cancel(request->id());
    if (!job.ok()) return ToGrpcStatus(job.status());
    *response = *std::move(job);
    return grpc::Status::OK;
  });
}

}  // namespace memaudit::server
