// The models of a model repository (docs/DESIGN.md §4) and their load state.
//
// Thread-safe. A model in use stays alive (shared_ptr) while an audit holds
// it, even if it is unloaded or reloaded meanwhile. A failed reload keeps
// the previous version serving.
#ifndef MEMAUDIT_SERVER_MODEL_REGISTRY_H_
#define MEMAUDIT_SERVER_MODEL_REGISTRY_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "core/checkpoint/load_model.h"
#include "core/model/denoiser.h"
#include "core/model/network_footprint.h"
#include "core/spectra/spectrum.h"
#include "core/verdict/reference_set.h"
#include "core/verdict/verdict.h"
#include "memaudit/v1/model_service.pb.h"

namespace memaudit::server {

// An immutable loaded model.
struct LoadedModel {
  std::shared_ptr<const DiffusionNetwork> network;
  std::unique_ptr<Denoiser> denoiser;
  std::optional<ReferenceSet> reference;
  // The reference set holds decoded images (latent.image_shape), not
  // latents: truth decodes the samples, and the verdict's radius/spacing
  // rule does not use it (different units).
  bool reference_holds_images = false;
  ResolvedPolicy policy;
  std::string checksum;  // "sha256:<hex>" of model.pt
  double load_seconds = 0;
  // The server's dense-spectrum limit (Arnoldi above it, in AUTO mode).
  int64_t max_dense_dimension = kDefaultMaxDenseDimension;
  // What the network allocates per call, measured at load (request
  // estimates count it).
  NetworkFootprint footprint;
};

class ModelRegistry {
 public:
  static constexpr absl::Duration kDefaultLoadTimeout = absl::Minutes(5);

  // Called after every load attempt with (model, ok, seconds), and after
  // unloads with ok = false, seconds = 0; used for metrics.
  using LoadObserver = std::function<void(const std::string&, bool, double)>;

  // A load that takes longer than `load_timeout` is abandoned (see Load).
  ModelRegistry(std::string repository, CheckpointOptions options, LoadObserver observer = {},
                int64_t max_dense_dimension = kDefaultMaxDenseDimension,
                absl::Duration load_timeout = kDefaultLoadTimeout);

  const std::string& repository() const { return repository_; }
  const CheckpointOptions& options() const { return options_; }

  // Subdirectory names of the repository that contain a config.pbtxt.
  std::vector<std::string> ScanRepository() const;
  // Whether `name` is a valid model name with a directory in the
  // repository (what Load looks for first).
  bool ExistsInRepository(const std::string& name) const;

  // Loads every model in the repository; returns how many failed. Failures
  // are recorded per model (see Info) and never abort the others.
  int LoadAll();

  // (Re)loads `name`: NOT_FOUND if the repository has no such directory,
  // otherwise the load error (the previous version, if any, stays):
  // FAILED_PRECONDITION naming the file for a bad or missing file in the
  // directory (the server's state, not the caller's argument), INTERNAL or
  // RESOURCE_EXHAUSTED when LibTorch fails.
  // ABORTED when the model is unloaded while it loads: the unload wins and
  // the freshly loaded version is dropped. UNAVAILABLE while another load
  // of the same model runs (loads of different models run in parallel).
  // DEADLINE_EXCEEDED after load_timeout: LibTorch calls cannot be
  // interrupted, so the load's thread is abandoned (it and what it holds
  // stay until the process ends), the model is FAILED with that reason
  // (a previously loaded version keeps serving), and a late result is
  // dropped.
  absl::StatusOr<v1::ModelInfo> Load(const std::string& name);
  absl::StatusOr<v1::ModelInfo> Unload(const std::string& name);

  // NOT_FOUND for an unknown model, UNAVAILABLE when it is not loaded
  // (loading, failed, unloaded) — with the reason.
  absl::StatusOr<std::shared_ptr<const LoadedModel>> Get(const std::string& name) const;

  absl::StatusOr<v1::ModelInfo> Info(const std::string& name) const;
  std::vector<v1::ModelInfo> List() const;

 private:
  struct Entry {
    v1::ModelState state = v1::MODEL_UNLOADED;
    std::shared_ptr<const LoadedModel> model;
    std::string last_error;
    uint64_t unloads = 0;  // a load that started before an unload is dropped
    bool loading = false;  // a load of this model is running
    // Notified when the thread of a load abandoned at its timeout ends (if
    // ever): until then no new load of the model starts, or every retry
    // would leave one more thread spinning.
    std::shared_ptr<const absl::Notification> abandoned_load;
  };
  v1::ModelInfo InfoLocked(const std::string& name, const Entry& entry) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const std::string repository_;
  const CheckpointOptions options_;
  const LoadObserver observer_;
  const int64_t max_dense_dimension_;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  const absl::Duration load_timeout_;
};

// "sha256:<hex>" of a file's bytes.
absl::StatusOr<std::string> FileSha256(const std::string& path);

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_MODEL_REGISTRY_H_
