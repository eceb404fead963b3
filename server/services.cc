#include "services.h"

#include <ATen/ATen.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "arnoldi.h"
#include "calibration_runner.h"
#include "early_metrics.h"
#include "grpc_status.h"
#include "request_options.h"
#include "sample_curvature.h"
#include "sampler.h"
#include "spectrum.h"
#include "tensor_codec.h"

namespace memaudit::server {
namespace {

const char* CodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  const int index = static_cast<int>(code);
  return index >= 0 && index <= 16 ? kNames[index] : "UNKNOWN";
}

// Times a handler and records it by method and code.
template <typename Handler>
grpc::Status Instrumented(Metrics* metrics, const char* method, Handler&& handler) {
  const auto start = std::chrono::steady_clock::now();
  grpc::Status status = handler();
  if (metrics != nullptr) {
    metrics->ObserveRpc(
        method, CodeName(status.error_code()),
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return status;
}

absl::Status RequireModelName(const std::string& name) {
  return name.empty() ? absl::InvalidArgumentError("model: required") : absl::OkStatus();
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
  absl::Status submitted = pool.Submit([shared, work = std::move(work), stop] {
    try {
      shared->status = work(stop);
    } catch (const std::exception& e) {
      // LibTorch throws c10::Error (e.g. out of memory): fail the call, not
      // the server.
      shared->status = absl::InternalError(absl::StrCat("unexpected error: ", e.what()));
    }
    shared->done.Notify();
  });
  if (!submitted.ok()) return submitted;
  while (!shared->done.WaitForNotificationWithTimeout(absl::Milliseconds(50))) {
    if (context->IsCancelled()) shared->abandoned = true;
  }
  if (context->IsCancelled() && shared->status.ok()) {
    return absl::CancelledError("the client cancelled the call");
  }
  return shared->status;
}

// ---------------------------------------------------------------- models

grpc::Status ModelServiceImpl::ListModels(grpc::ServerContext*, const v1::ListModelsRequest*,
                                          v1::ListModelsResponse* response) {
  return Instrumented(metrics_, "ModelService/ListModels", [&] {
    for (v1::ModelInfo& info : registry_->List()) *response->add_models() = std::move(info);
    return grpc::Status::OK;
  });
}

grpc::Status ModelServiceImpl::GetModel(grpc::ServerContext*, const v1::GetModelRequest* request,
                                        v1::ModelInfo* response) {
  return Instrumented(metrics_, "ModelService/GetModel", [&] {
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
  return Instrumented(metrics_, "ModelService/LoadModel", [&] {
    if (absl::Status s = RequireModelName(request->name()); !s.ok()) return ToGrpcStatus(s);
    const std::string name = request->name();
    v1::ModelInfo info;
    absl::Status status = RunOnPool(*pool_, context, [this, name, &info](const StopCheck&) {
      auto loaded = registry_->Load(name);
      if (!loaded.ok()) return loaded.status();
      info = *std::move(loaded);
      return absl::OkStatus();
    });
    if (!status.ok()) return ToGrpcStatus(status);
    *response = std::move(info);
    return grpc::Status::OK;
  });
}

grpc::Status ModelServiceImpl::UnloadModel(grpc::ServerContext*,
                                           const v1::UnloadModelRequest* request,
                                           v1::ModelInfo* response) {
  return Instrumented(metrics_, "ModelService/UnloadModel", [&] {
    if (absl::Status s = RequireModelName(request->name()); !s.ok()) return ToGrpcStatus(s);
    auto info = registry_->Unload(request->name());
    if (!info.ok()) return ToGrpcStatus(info.status());
    *response = *std::move(info);
    return grpc::Status::OK;
  });
}

// ---------------------------------------------------------------- audits

absl::Status AuditServiceImpl::ComputeSpectrum(const v1::SpectrumRequest& request,
                                               const StopCheck& stop,
                                               v1::SpectrumResponse* response) {
  const auto start = std::chrono::steady_clock::now();
  if (absl::Status s = RequireModelName(request.model()); !s.ok()) return s;
  auto model = registry_->Get(request.model());
  if (!model.ok()) return model.status();
  const Denoiser& denoiser = *(*model)->denoiser;
  const Checkpoint& checkpoint = denoiser.checkpoint();
  auto curvature = ToCurvatureSettings(request.curvature(), "curvature");
  if (!curvature.ok()) return curvature.status();
  const SpectrumMethod method = ResolveSpectrumMethod(curvature->method, checkpoint.sample_numel(),
                                                      options_.max_dense_dimension);
  if (method == SpectrumMethod::kDense &&
      checkpoint.sample_numel() > options_.max_dense_dimension) {
    return absl::InvalidArgumentError(
        absl::StrCat("curvature.method: dimension ", checkpoint.sample_numel(),
                     " exceeds the dense-spectrum limit ", options_.max_dense_dimension,
                     " (server flag --max_dense_dimension); use ARNOLDI"));
  }
  auto condition = ToConditionBatch(request.condition(), denoiser, 1, "condition");
  if (!condition.ok()) return condition.status();
  auto sampler = ToSamplerOptions(request.sampling(), denoiser.schedule(), "sampling");
  if (!sampler.ok()) return sampler.status();
  if (request.has_timestep()) {
    if (absl::Status s = CheckTimestep(request.timestep(), denoiser.schedule(), "timestep");
        !s.ok()) {
      return s;
    }
  }
  at::Tensor x;
  int64_t t = 0;
  if (request.point_case() == v1::SpectrumRequest::kX) {
    if (!request.has_timestep()) {
      return absl::InvalidArgumentError("timestep: required when x is given");
    }
    auto decoded = DecodeTensor(request.x(), "x");
    if (!decoded.ok()) return decoded.status();
    if (decoded->numel() != checkpoint.sample_numel() ||
        (decoded->dim() != checkpoint.config().sample_shape_size() &&
         decoded->dim() != checkpoint.config().sample_shape_size() + 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "x.shape: expected [", absl::StrJoin(checkpoint.config().sample_shape(), ", "),
          "] or [1, ", absl::StrJoin(checkpoint.config().sample_shape(), ", "), "], got [",
          absl::StrJoin(decoded->sizes(), ", "), "]"));
    }
    x = decoded->reshape(checkpoint.BatchShape(1)).to(checkpoint.device(), checkpoint.dtype());
    t = request.timestep();
  } else if (request.point_case() == v1::SpectrumRequest::kSeed) {
    auto trajectory = SampleTrajectories(denoiser, {request.seed()}, *condition, *sampler, stop);
    if (!trajectory.ok()) return trajectory.status();
    t = request.has_timestep()
            ? request.timestep()
            : trajectory->timesteps[FirstStepBelowSigma(trajectory->timesteps, denoiser.schedule(),
                                                        kDefaultEvaluationMaxSigma)];
    auto state = StateAtTimestep(denoiser, *trajectory, t, *condition, sampler->guidance);
    if (!state.ok()) return state.status();
    x = *state;
  } else {
    return absl::InvalidArgumentError("point: give x (with timestep) or a seed");
  }
  auto field = denoiser.ScoreField(t, curvature->score_kind, *condition, sampler->guidance);
  if (!field.ok()) return field.status();
  const auto spectrum_start = std::chrono::steady_clock::now();
  const at::Tensor row = at::zeros({1}, at::TensorOptions().dtype(at::kLong).device(x.device()));
  memaudit::Spectrum spectrum;
  if (method == SpectrumMethod::kArnoldi) {
    auto computed = MatrixFreeSpectrum(*field, x, row, t, denoiser.schedule(), curvature->arnoldi,
                                       curvature->spectrum, stop);
    if (!computed.ok()) return computed.status();
    spectrum = *std::move(computed);
  } else {
    auto jacobian = DenseJacobians(*field, x, row, curvature->jacobian, stop);
    if (!jacobian.ok()) return jacobian.status();
    auto spectra = DenseSpectra(*jacobian, t, denoiser.schedule(), curvature->spectrum, stop);
    if (!spectra.ok()) return spectra.status();
    spectrum = std::move(spectra->front());
  }
  if (metrics_) {
    metrics_->ObserveSpectrum(
        spectrum.method,
        std::chrono::duration<double>(std::chrono::steady_clock::now() - spectrum_start).count());
  }
  response->set_model(request.model());
  response->set_timestep(t);
  response->set_sigma(spectrum.sigma);
  response->set_symmetrized(spectrum.symmetrized);
  response->set_method(spectrum.method);
  response->set_matvecs(spectrum.matvecs);
  response->set_requested_eigenvalues(spectrum.requested);
  response->set_converged(spectrum.converged);
  for (const auto& lambda : spectrum.eigenvalues) {
    response->add_eigenvalues_real(lambda.real());
    response->add_eigenvalues_imag(lambda.imag());
  }
  ToSummaryProto(spectrum.summary, response->mutable_summary());
  if (request.return_point()) EncodeTensor(x[0], response->mutable_point());
  if (request.early_steps() > 0) {
    if (request.point_case() != v1::SpectrumRequest::kSeed) {
      return absl::InvalidArgumentError("early_steps: needs a sampled point (seed)");
    }
    EarlyMetricOptions early;
    early.sampler = *sampler;
    early.steps = request.early_steps();
    if (early.steps > sampler->num_steps) {
      return absl::InvalidArgumentError("early_steps: must be at most sampling.num_steps");
    }
    auto metrics = ComputeEarlyMetrics(denoiser, {request.seed()}, *condition, early, stop);
    if (!metrics.ok()) return metrics.status();
    ToEarlyMetricsProto(*metrics, response->mutable_early());
  }
  response->set_seconds(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return absl::OkStatus();
}

grpc::Status AuditServiceImpl::Spectrum(grpc::ServerContext* context,
                                        const v1::SpectrumRequest* request,
                                        v1::SpectrumResponse* response) {
  return Instrumented(metrics_, "AuditService/Spectrum", [&] {
    v1::SpectrumResponse result;
    absl::Status status = RunOnPool(*pool_, context, [&](const StopCheck& stop) {
      return ComputeSpectrum(*request, stop, &result);
    });
    if (status.ok()) *response = std::move(result);
    return ToGrpcStatus(status);
  });
}

absl::StatusOr<at::Tensor> AuditServiceImpl::Samples(const v1::SampleRequest& request,
                                                     const std::vector<uint64_t>& seeds,
                                                     const StopCheck& stop) {
  if (absl::Status s = RequireModelName(request.model()); !s.ok()) return s;
  auto model = registry_->Get(request.model());
  if (!model.ok()) return model.status();
  const Denoiser& denoiser = *(*model)->denoiser;
  auto sampler = ToSamplerOptions(request.sampling(), denoiser.schedule(), "sampling");
  if (!sampler.ok()) return sampler.status();
  auto condition = ToConditionBatch(request.condition(), denoiser,
                                    static_cast<int64_t>(seeds.size()), "condition");
  if (!condition.ok()) return condition.status();
  auto trajectory = SampleTrajectories(denoiser, seeds, *condition, *sampler, stop);
  if (!trajectory.ok()) return trajectory.status();
  return trajectory->final_sample.to(at::kCPU, at::kFloat);
}

absl::Status AuditServiceImpl::CheckSeedCount(int count) const {
  if (count == 0 || count > options_.max_samples_per_request) {
    return absl::InvalidArgumentError(
        absl::StrCat("seeds: give 1 to ", options_.max_samples_per_request, " seeds"));
  }
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> AuditServiceImpl::SamplesOnPool(grpc::ServerContext* context,
                                                           const v1::SampleRequest& request,
                                                           const std::vector<uint64_t>& seeds) {
  at::Tensor samples;
  absl::Status status = RunOnPool(*pool_, context, [&](const StopCheck& stop) {
    auto result = Samples(request, seeds, stop);
    if (!result.ok()) return result.status();
    samples = *result;
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  return samples;
}

grpc::Status AuditServiceImpl::Sample(grpc::ServerContext* context,
                                      const v1::SampleRequest* request,
                                      v1::SampleResponse* response) {
  return Instrumented(metrics_, "AuditService/Sample", [&] {
    if (absl::Status s = CheckSeedCount(request->seeds_size()); !s.ok()) return ToGrpcStatus(s);
    std::vector<uint64_t> seeds(request->seeds().begin(), request->seeds().end());
    auto samples = SamplesOnPool(context, *request, seeds);
    if (!samples.ok()) return ToGrpcStatus(samples.status());
    *response->mutable_seeds() = request->seeds();
    EncodeTensor(*samples, response->mutable_samples());
    return grpc::Status::OK;
  });
}

grpc::Status AuditServiceImpl::StreamSamples(grpc::ServerContext* context,
                                             const v1::SampleRequest* request,
                                             grpc::ServerWriter<v1::SampleResponse>* writer) {
  return Instrumented(metrics_, "AuditService/StreamSamples", [&] {
    if (absl::Status s = CheckSeedCount(request->seeds_size()); !s.ok()) return ToGrpcStatus(s);
    constexpr int kBatch = 8;
    for (int first = 0; first < request->seeds_size(); first += kBatch) {
      const int count = std::min(kBatch, request->seeds_size() - first);
      std::vector<uint64_t> seeds(request->seeds().begin() + first,
                                  request->seeds().begin() + first + count);
      auto samples = SamplesOnPool(context, *request, seeds);
      if (!samples.ok()) return ToGrpcStatus(samples.status());
      for (int i = 0; i < count; ++i) {
        v1::SampleResponse response;
        response.add_seeds(seeds[i]);
        EncodeTensor(samples->narrow(0, i, 1), response.mutable_samples());
        if (!writer->Write(response))
          return grpc::Status(grpc::StatusCode::CANCELLED, "client gone");
      }
    }
    return grpc::Status::OK;
  });
}

grpc::Status AuditServiceImpl::EarlyMetrics(grpc::ServerContext* context,
                                            const v1::EarlyMetricsRequest* request,
                                            v1::EarlyMetricsResponse* response) {
  return Instrumented(metrics_, "AuditService/EarlyMetrics", [&] {
    if (absl::Status s = CheckSeedCount(request->seeds_size()); !s.ok()) return ToGrpcStatus(s);
    v1::EarlyMetricsResponse result;
    absl::Status status = RunOnPool(*pool_, context, [&](const StopCheck& stop) -> absl::Status {
      const auto start = std::chrono::steady_clock::now();
      if (absl::Status s = RequireModelName(request->model()); !s.ok()) return s;
      auto model = registry_->Get(request->model());
      if (!model.ok()) return model.status();
      const Denoiser& denoiser = *(*model)->denoiser;
      EarlyMetricOptions options;
      auto sampler = ToSamplerOptions(request->sampling(), denoiser.schedule(), "sampling");
      if (!sampler.ok()) return sampler.status();
      options.sampler = *sampler;
      if (request->steps() < 0 || request->steps() > options.sampler.num_steps) {
        return absl::InvalidArgumentError(
            absl::StrCat("steps: must be in [1, num_steps = ", options.sampler.num_steps, "]"));
      }
      if (request->steps() > 0) options.steps = request->steps();
      if (request->hutchinson_probes() < 0 || request->hutchinson_probes() > 1024) {
        return absl::InvalidArgumentError("hutchinson_probes: must be in [1, 1024]");
      }
      if (request->hutchinson_probes() > 0)
        options.hutchinson_probes = request->hutchinson_probes();
      std::vector<uint64_t> seeds(request->seeds().begin(), request->seeds().end());
      auto condition = ToConditionBatch(request->condition(), denoiser,
                                        static_cast<int64_t>(seeds.size()), "condition");
      if (!condition.ok()) return condition.status();
      auto computed = ComputeEarlyMetrics(denoiser, seeds, *condition, options, stop);
      if (!computed.ok()) return computed.status();
      ToEarlyMetricsProto(*computed, &result);
      result.set_seconds(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      return absl::OkStatus();
    });
    if (status.ok()) *response = std::move(result);
    return ToGrpcStatus(status);
  });
}

grpc::Status AuditServiceImpl::Calibrate(grpc::ServerContext* context,
                                         const v1::CalibrationRequest* request,
                                         v1::CalibrationResponse* response) {
  return Instrumented(metrics_, "AuditService/Calibrate", [&] {
    v1::CalibrationResponse result;
    absl::Status status = RunOnPool(*pool_, context, [&](const StopCheck& stop) -> absl::Status {
      if (absl::Status s = RequireModelName(request->model()); !s.ok()) return s;
      auto model = registry_->Get(request->model());
      if (!model.ok()) return model.status();
      auto calibrated = RunCalibration(*request, **model, stop);
      if (!calibrated.ok()) return calibrated.status();
      result = *std::move(calibrated);
      return absl::OkStatus();
    });
    if (status.ok()) *response = std::move(result);
    return ToGrpcStatus(status);
  });
}

grpc::Status AuditServiceImpl::SubmitAudit(grpc::ServerContext*, const v1::AuditRequest* request,
                                           v1::AuditJob* response) {
  return Instrumented(metrics_, "AuditService/SubmitAudit", [&] {
    auto job = jobs_->Submit(*request);
    if (!job.ok()) return ToGrpcStatus(job.status());
    *response = *std::move(job);
    return grpc::Status::OK;
  });
}

grpc::Status AuditServiceImpl::WatchAudit(grpc::ServerContext* context,
                                          const v1::WatchAuditRequest* request,
                                          grpc::ServerWriter<v1::AuditEvent>* writer) {
  return Instrumented(metrics_, "AuditService/WatchAudit", [&] {
    size_t next = 0;
    while (true) {
      if (context->IsCancelled()) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the watch");
      }
      if (std::chrono::system_clock::now() > context->deadline()) {
        return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "watch deadline passed");
      }
      bool finished = false;
      auto events = jobs_->Events(request->id(), next, absl::Milliseconds(200), &finished);
      if (!events.ok()) return ToGrpcStatus(events.status());
      for (const v1::AuditEvent& event : *events) {
        if (!writer->Write(event)) {
          return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
        }
      }
      next += events->size();
      if (finished && events->empty()) return grpc::Status::OK;
      if (finished && !events->empty() && events->back().has_finished()) return grpc::Status::OK;
    }
  });
}

grpc::Status AuditServiceImpl::GetAudit(grpc::ServerContext*, const v1::GetAuditRequest* request,
                                        v1::AuditJob* response) {
  return Instrumented(metrics_, "AuditService/GetAudit", [&] {
    auto job = jobs_->Get(request->id());
    if (!job.ok()) return ToGrpcStatus(job.status());
    *response = *std::move(job);
    return grpc::Status::OK;
  });
}

grpc::Status AuditServiceImpl::ListAudits(grpc::ServerContext*, const v1::ListAuditsRequest*,
                                          v1::ListAuditsResponse* response) {
  return Instrumented(metrics_, "AuditService/ListAudits", [&] {
    for (v1::AuditJob& job : jobs_->List()) *response->add_jobs() = std::move(job);
    return grpc::Status::OK;
  });
}

grpc::Status AuditServiceImpl::CancelAudit(grpc::ServerContext*,
                                           const v1::CancelAuditRequest* request,
                                           v1::AuditJob* response) {
  return Instrumented(metrics_, "AuditService/CancelAudit", [&] {
    auto job = jobs_->Cancel(request->id());
    if (!job.ok()) return ToGrpcStatus(job.status());
    *response = *std::move(job);
    return grpc::Status::OK;
  });
}

}  // namespace memaudit::server
