#include "server/request_memory.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <limits>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/base/status_macros.h"
#include "core/checkpoint/load_model.h"
#include "core/device/device_memory.h"
#include "core/model/sampler.h"

namespace memaudit::server {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kDouble = 8;
// Tensors of a sampling step beside the state: the network input (twice
// under guidance), its output, the x0 estimate, the noise.
constexpr int64_t kStepWorkingCopies = 5;
// Double-precision d×d matrices the dense eigen-solver holds per sample
// (the matrix, its Schur form and workspace).
constexpr int64_t kEigenCopies = 3;

// Saturating arithmetic: request sizes are bounded, but their products
// need not fit in 64 bits.
int64_t Mul(int64_t a, int64_t b) {
  if (a == 0 || b == 0) return 0;
  if (a > std::numeric_limits<int64_t>::max() / b) return std::numeric_limits<int64_t>::max();
  return a * b;
}
int64_t Add(int64_t a, int64_t b) {
  return a > std::numeric_limits<int64_t>::max() - b ? std::numeric_limits<int64_t>::max() : a + b;
}

std::string Mib(int64_t bytes) { return absl::StrCat((bytes + kMiB - 1) / kMiB, " MiB"); }

// Sums named parts into an estimate.
class Tally {
 public:
  void Add(const char* part, int64_t bytes) {
    if (bytes <= 0) return;
    estimate_.bytes = memaudit::server::Add(estimate_.bytes, bytes);
    estimate_.parts.push_back({part, bytes});
  }
  // A part alive one phase at a time (the network's activations: sampling's
  // calls end before the spectra's start): the largest phase counts.
  void AddLargest(const char* part, int64_t bytes) {
    for (MemoryEstimate::Part& existing : estimate_.parts) {
      if (existing.name != part) continue;
      if (bytes > existing.bytes) {
        estimate_.bytes = memaudit::server::Add(estimate_.bytes - existing.bytes, bytes);
        existing.bytes = bytes;
      }
      return;
    }
    Add(part, bytes);
  }
  MemoryEstimate Done() const { return estimate_; }

 private:
  MemoryEstimate estimate_;
};

int64_t ElementBytes(const LoadedModel& model) {
  return static_cast<int64_t>(c10::elementSize(model.network->dtype()));
}
int64_t Dimension(const LoadedModel& model) { return model.network->sample_numel(); }

// Network rows per sample of a call: conditional models may run the
// condition and the null condition together (guidance, guided fields).
int64_t RowsPerSample(const LoadedModel& model) { return model.network->conditional() ? 2 : 1; }

// The network's own allocations (measured at load) for calls on `rows`
// rows at once, without or with gradients.
void AddNetwork(Tally& tally, const LoadedModel& model, int64_t rows, bool gradient) {
  const NetworkFootprint& footprint = model.footprint;
  tally.AddLargest("network activations",
                   gradient ? footprint.GradientBytes(rows) : footprint.InferenceBytes(rows));
}

// Sampling `batch` samples, keeping `kept_states` states of each.
void AddSampling(Tally& tally, const LoadedModel& model, const SamplerOptions& sampler,
                 int64_t batch, int64_t kept_states) {
  const int64_t one = Mul(Dimension(model), ElementBytes(model));
  tally.Add("states", Mul(Mul(batch, kept_states), one));
  tally.Add("sampling buffers", Mul(Mul(batch, kStepWorkingCopies), one));
  AddNetwork(tally, model, Mul(batch, SamplingRowsPerSample(*model.network, sampler)),
             /*gradient=*/false);
}

// Spectra of `batch` samples at one timestep, as SpectraAt computes them.
void AddSpectra(Tally& tally, const LoadedModel& model, const SampleCurvatureOptions& options,
                int64_t batch) {
  const int64_t d = Dimension(model);
  const int64_t element = ElementBytes(model);
  if (ResolveSpectrumMethod(options.method, d, options.max_dense_dimension) ==
      SpectrumMethod::kArnoldi) {
    const int64_t subspace = ArnoldiSubspace(options.arnoldi, d);
    // Per solve running at once (a lockstep group): the Krylov basis, and
    // Spectra's m × m matrices (the Hessenberg matrix, the shifted-QR
    // factor, the Schur form and its vectors), and one product's tensors.
    const int64_t solves =
        std::clamp<int64_t>(LockstepGroup(options.arnoldi, d, !model.network->device().is_cpu()), 1,
                            std::max<int64_t>(batch, 1));
    const int64_t one_solve =
        Add(Mul(Mul(subspace, d), kDouble), Mul(Mul(Mul(subspace, subspace), 4), kDouble));
    tally.Add("Arnoldi basis", Mul(solves, one_solve));
    tally.Add("network product", Mul(Mul(Mul(solves, kStepWorkingCopies), d), element));
    // Each product is one forward + backward on a lockstep group's rows.
    AddNetwork(tally, model, Mul(solves, RowsPerSample(model)), /*gradient=*/true);
    return;
  }
  const int64_t chunk = std::max<int64_t>(1, options.jacobian.chunk_rows);
  const int64_t group = std::min(batch, std::max<int64_t>(1, chunk / std::max<int64_t>(d, 1)));
  tally.Add("Jacobians", Mul(Mul(Mul(group, d), d), element));
  tally.Add("eigen-solver", Mul(Mul(Mul(kEigenCopies, d), d), kDouble));
  tally.Add("JVP chunk", Mul(Mul(Mul(std::min(chunk, Mul(group, d)), d), element), 2));
  // A chunk of Jacobian rows is one batched forward + backward.
  AddNetwork(tally, model, Mul(std::min(chunk, Mul(group, d)), RowsPerSample(model)),
             /*gradient=*/true);
}

// The steps a measurement keeps: every sampling state (spectra may be
// asked at any of them) and the initial noise.
int64_t KeptStates(const SamplerOptions& sampler) { return Add(sampler.num_steps, 1); }

void AddEarly(Tally& tally, const LoadedModel& model, const EarlyMetricOptions& early,
              int64_t batch) {
  const int64_t one = Mul(Dimension(model), ElementBytes(model));
  tally.Add("early-metric states", Mul(Mul(batch, Add(early.steps, 1)), one));
  // The field at each sampled state, kept from the sampling call.
  tally.Add("early-metric fields", Mul(Mul(batch, early.steps), one));
  // Each metric's JVPs and Hutchinson probes run over the whole batch.
  tally.Add("early-metric buffers", Mul(Mul(batch, 2 * kStepWorkingCopies), one));
  // Hutchinson's Rademacher probes (the unconditional derivative metrics):
  // all P·B drawn at once in float32, then converted to the model's dtype.
  if (early.derivative_metrics) {
    tally.Add("Hutchinson probes", Mul(Mul(Mul(batch, early.hutchinson_probes), Dimension(model)),
                                       Add(4, ElementBytes(model))));
  }
  // Derivatives through the network on every sample's rows at once
  // (forward-mode products cost about what a forward + backward does).
  AddNetwork(tally, model, Mul(batch, RowsPerSample(model)), /*gradient=*/true);
}

// One decoded image of a latent model, float32.
int64_t DecodedImageBytes(const LoadedModel& model) {
  int64_t pixels = 1;
  for (int64_t dim : model.network->config().latent().image_shape()) pixels = Mul(pixels, dim);
  return Mul(pixels, 4);
}

// Tensors the guard holds per row beside the network's own graph: x_T, the
// moved x, the gradient, the score, H·s and their graph's saved copies.
constexpr int64_t kGuardCopies = 8;

// cgroup v2 memory.max (or v1 limit_in_bytes); 0 when there is none.
int64_t CgroupLimitBytes() {
  for (const char* path :
       {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    std::ifstream in(path);
    std::string text;
    int64_t limit = 0;
    if (in >> text && text != "max" && absl::SimpleAtoi(text, &limit) && limit > 0) return limit;
  }
  return 0;
}

}  // namespace

int64_t MemoryEstimate::PartBytes(const std::string& name) const {
  for (const Part& part : parts) {
    if (part.name == name) return part.bytes;
  }
  return 0;
}

std::string MemoryEstimate::Breakdown() const {
  std::vector<std::string> named;
  for (const Part& part : parts) named.push_back(absl::StrCat(part.name, " ", Mib(part.bytes)));
  return absl::StrJoin(named, " + ");
}

MemoryEstimate EstimateAudit(const AuditPlan& plan) {
  Tally tally;
  const LoadedModel& model = *plan.model;
  if (plan.mode == AuditPlan::Mode::kFull) {
    const int64_t batch = std::min(kAuditSamplesPerBatch, plan.samples_per_condition);
    AddSampling(tally, model, plan.curvature.sampler, batch, KeptStates(plan.curvature.sampler));
    AddSpectra(tally, model, plan.curvature, batch);
  }
  if (plan.early.has_value()) {
    AddEarly(tally, model, *plan.early, plan.samples_per_condition);
  }
  return tally.Done();
}

MemoryEstimate EstimateCalibration(const CalibrationPlan& plan) {
  Tally tally;
  const LoadedModel& model = *plan.model;
  const int64_t batch = plan.samples_per_condition;
  if (!plan.early_only) {
    AddSampling(tally, model, plan.curvature.sampler, batch, KeptStates(plan.curvature.sampler));
    AddSpectra(tally, model, plan.curvature, batch);
  }
  AddEarly(tally, model, plan.early, batch);
  return tally.Done();
}

MemoryEstimate EstimateSpectrum(const SpectrumPlan& plan) {
  Tally tally;
  const LoadedModel& model = *plan.model;
  if (plan.seed.has_value()) {
    AddSampling(tally, model, plan.curvature.sampler, 1, KeptStates(plan.curvature.sampler));
  }
  AddSpectra(tally, model, plan.curvature, 1);
  if (plan.early.has_value()) AddEarly(tally, model, *plan.early, 1);
  return tally.Done();
}

MemoryEstimate EstimateSample(const SamplePlan& plan, int64_t batch) {
  Tally tally;
  // Only the final samples are kept (plus the state being stepped).
  AddSampling(tally, *plan.model, plan.sampler, batch, 2);
  if (plan.decode) tally.Add("decoded images", Mul(batch, DecodedImageBytes(*plan.model)));
  return tally.Done();
}

MemoryEstimate EstimateMitigate(const MitigatePlan& plan, int64_t batch) {
  Tally tally;
  const LoadedModel& model = *plan.model;
  tally.Add("guard", Mul(Mul(batch, kGuardCopies), Mul(Dimension(model), ElementBytes(model))));
  // The guard's gradient runs through the network on every seed's rows.
  AddNetwork(tally, model, Mul(batch, RowsPerSample(model)), /*gradient=*/true);
  AddSampling(tally, model, plan.curvature.sampler, batch, KeptStates(plan.curvature.sampler));
  AddSpectra(tally, model, plan.curvature, batch);
  // Both samples of each seed, decoded.
  if (plan.decode) tally.Add("decoded images", Mul(Mul(2, batch), DecodedImageBytes(model)));
  return tally.Done();
}

MemoryEstimate EstimateEarlyMetrics(const EarlyMetricsPlan& plan) {
  Tally tally;
  AddEarly(tally, *plan.model, plan.options, static_cast<int64_t>(plan.seeds.size()));
  return tally.Done();
}

absl::Status CheckRequestMemory(const MemoryEstimate& estimate, int64_t limit_bytes,
                                const std::string& what) {
  if (limit_bytes <= 0 || estimate.bytes <= limit_bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      what, " would hold about ", Mib(estimate.bytes), " (", estimate.Breakdown(),
      "), more than this server allows per request (--max_request_memory_mib ", limit_bytes / kMiB,
      "); use fewer seeds or samples, fewer sampling steps, or the arnoldi method"));
}

MemoryBudget::MemoryBudget(int64_t limit_bytes,
                           std::function<std::optional<DeviceMemoryLeft>()> device_left)
    : limit_bytes_(limit_bytes), device_left_(std::move(device_left)) {}

MemoryBudget MemoryBudget::ForDevice(int64_t limit_bytes, const std::string& device) {
  absl::StatusOr<torch::Device> parsed = ParseDevice(device);
  if (!parsed.ok() || !parsed->is_cuda()) return MemoryBudget(limit_bytes);
  return MemoryBudget(limit_bytes, [device = *parsed]() -> std::optional<DeviceMemoryLeft> {
    absl::StatusOr<CudaMemory> memory = QueryCudaMemory(device);
    if (!memory.ok()) return std::nullopt;
    return DeviceMemoryLeft{device.str(), memory->available(), memory->total};
  });
}

absl::Status MemoryBudget::Check(const MemoryEstimate& estimate, const std::string& what) const {
  RETURN_IF_ERROR(CheckRequestMemory(estimate, limit_bytes_, what));
  if (!device_left_) return absl::OkStatus();
  const std::optional<DeviceMemoryLeft> left = device_left_();
  if (!left.has_value() || estimate.bytes <= left->available) return absl::OkStatus();
  return absl::ResourceExhaustedError(
      absl::StrCat(what, " would hold about ", Mib(estimate.bytes), " on ", left->device, " (",
                   estimate.Breakdown(), "), more than is free there now (", Mib(left->available),
                   " of ", Mib(left->total),
                   "); retry when other requests have finished, or use fewer seeds or "
                   "samples, fewer sampling steps, or the arnoldi method"));
}

int64_t DefaultRequestMemoryLimitBytes() {
  const int64_t pages = sysconf(_SC_PHYS_PAGES);
  const int64_t page_size = sysconf(_SC_PAGE_SIZE);
  int64_t available = pages > 0 && page_size > 0 ? Mul(pages, page_size) : 0;
  const int64_t cgroup = CgroupLimitBytes();
  if (cgroup > 0 && (available == 0 || cgroup < available)) available = cgroup;
  return available / 2;
}

}  // namespace memaudit::server
