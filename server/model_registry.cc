#include "server/model_registry.h"

#include <openssl/evp.h>
#include <pthread.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/notification.h"
#include "core/base/status_macros.h"
#include "core/checkpoint/latent_decoder.h"
#include "core/text/utf8.h"

namespace memaudit::server {
namespace {
namespace fs = std::filesystem;

// A model load's stack. TorchScript's parser and compiler recurse once per
// level of nesting of the code they compile (10,000 nested parentheses
// overflowed 8 MiB; unary minuses, one byte a level, raised the server's
// peak memory by about 160 MB for 30,000 and 360 MB for 65,000). The
// archive check bounds that nesting by 32 KiB statements and 4,096-deep
// brackets (core/runtime/archive_check.h), which this holds. Reserved, not
// committed: only the pages a load touches are used.
constexpr size_t kLoadThreadStackBytes = size_t{512} << 20;

// Runs `work` on a detached thread with kLoadThreadStackBytes of stack, or
// with the default stack where the system refuses that reservation (strict
// overcommit), saying so on stderr.
void StartLoadThread(std::function<void()> work) {
  auto* owned = new std::function<void()>(std::move(work));
  auto run = [](void* argument) -> void* {
    std::unique_ptr<std::function<void()>> job(static_cast<std::function<void()>*>(argument));
    (*job)();
    return nullptr;
  };
  for (const size_t stack : {kLoadThreadStackBytes, size_t{0}}) {
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    if (stack > 0) pthread_attr_setstacksize(&attributes, stack);
    pthread_t thread;
    const int error = pthread_create(&thread, &attributes, run, owned);
    pthread_attr_destroy(&attributes);
    if (error == 0) return;
    if (stack == 0) {
      // No thread at all: run here rather than lose the load.
      run(owned);
      return;
    }
    std::fprintf(stderr,
                 "memaudit-server: cannot reserve a %zu MiB stack for a model load (%s); "
                 "loading with the default stack\n",
                 stack >> 20, std::strerror(error));
  }
}

bool IsValidModelName(const std::string& name) {
  if (name.empty() || name.size() > 128 || name == "." || name == "..") return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) {
      return false;
    }
  }
  return true;
}

// The name for an error message: names are echoed back to the caller, so a
// long one is cut (an 8 KB name once overflowed the response metadata).
std::string Quoted(const std::string& name) {
  constexpr size_t kShown = 64;
  if (name.size() <= kShown) return absl::StrCat("\"", name, "\"");
  return absl::StrCat("\"", name.substr(0, kShown), "…\" (", name.size(), " bytes)");
}

// Whether `path` resolves (following symbolic links) to `root` or below it.
bool ResolvesInside(const fs::path& path, const fs::path& root) {
  std::error_code ec;
  const fs::path resolved = fs::weakly_canonical(path, ec);
  if (ec) return false;
  const fs::path base = fs::weakly_canonical(root, ec);
  if (ec) return false;
  auto mismatch = std::mismatch(base.begin(), base.end(), resolved.begin(), resolved.end());
  return mismatch.first == base.end();
}

// Model directories and their files must stay inside the repository: a
// symbolic link that leaves it (a directory elsewhere, a config.pbtxt that
// is /etc/passwd) is refused before anything is read.
absl::Status CheckInsideRepository(const std::string& repository, const std::string& name) {
  const fs::path directory = fs::path(repository) / name;
  if (!ResolvesInside(directory, repository)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", Quoted(name), ": the directory links outside the repository"));
  }
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(directory, ec)) {
    if (!ResolvesInside(entry.path(), directory)) {
      return absl::InvalidArgumentError(absl::StrCat("model ", Quoted(name), ": ",
                                                     entry.path().filename().string(),
                                                     " links outside the model directory"));
    }
  }
  return absl::OkStatus();
}

// The code a failed load answers with. The loaders say INVALID_ARGUMENT or
// NOT_FOUND for a bad or missing file; to a caller of LoadModel that is not
// its argument (the name was found) but the state of the server's
// repository, which an operator must mend: FAILED_PRECONDITION.
absl::StatusCode LoadErrorCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kUnimplemented:
      return absl::StatusCode::kFailedPrecondition;
    default:
      return code;
  }
}

// Loads <repository>/<name>: checkpoint (with its probe), reference set,
// policy, checksum.
absl::StatusOr<std::shared_ptr<const LoadedModel>> LoadModelDirectory(
    const std::string& repository, const std::string& name, const CheckpointOptions& options,
    int64_t max_dense_dimension, std::chrono::steady_clock::time_point start) {
  const std::string directory = (fs::path(repository) / name).string();
  RETURN_IF_ERROR(CheckInsideRepository(repository, name));
  ASSIGN_OR_RETURN(const std::shared_ptr<const DiffusionNetwork> network,
                   LoadModel(directory, options));
  auto model = std::make_shared<LoadedModel>();
  model->network = network;
  model->denoiser = std::make_unique<Denoiser>(network);
  model->max_dense_dimension = max_dense_dimension;
  ASSIGN_OR_RETURN(
      model->footprint,
      MeasureNetworkFootprint(*network, (fs::path(directory) / kModelNetworkFile).string()));
  const std::string reference_path = (fs::path(directory) / ReferenceSet::kFileName).string();
  std::error_code ec;
  if (fs::exists(reference_path, ec)) {
    const auto& shape = network->config().sample_shape();
    absl::StatusOr<ReferenceSet> reference =
        ReferenceSet::Load(reference_path, std::vector<int64_t>(shape.begin(), shape.end()));
    if (!reference.ok() && network->latent_decoder() != nullptr) {
      // A latent model's reference set may hold images instead of latents.
      absl::StatusOr<ReferenceSet> images =
          ReferenceSet::Load(reference_path, network->latent_decoder()->image_shape());
      if (images.ok()) {
        reference = std::move(images);
        model->reference_holds_images = true;
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            reference.status().message(),
            "; nor is it a set of images of latent.image_shape: ", images.status().message()));
      }
    }
    if (!reference.ok()) return reference.status();
    model->reference = *std::move(reference);
  }
  // The radius/spacing rule compares a peak's radius with the spacing of
  // the training data in the same units: latents, not images.
  model->policy = ResolvePolicy(
      network->config().verdict_policy(),
      model->reference && !model->reference_holds_images ? &*model->reference : nullptr);
  model->policy.local_gap = !model->reference_holds_images;
  ASSIGN_OR_RETURN(model->checksum, FileSha256((fs::path(directory) / kModelNetworkFile).string()));
  model->load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return std::shared_ptr<const LoadedModel>(std::move(model));
}

}  // namespace

absl::StatusOr<std::string> FileSha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open file"));
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context(EVP_MD_CTX_new(),
                                                                  &EVP_MD_CTX_free);
  EVP_DigestInit_ex(context.get(), EVP_sha256(), nullptr);
  std::vector<char> buffer(1 << 16);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    EVP_DigestUpdate(context.get(), buffer.data(), static_cast<size_t>(in.gcount()));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(context.get(), digest, &length);
  std::string hex = "sha256:";
  for (unsigned int i = 0; i < length; ++i) absl::StrAppendFormat(&hex, "%02x", digest[i]);
  return hex;
}

ModelRegistry::ModelRegistry(std::string repository, CheckpointOptions options,
                             LoadObserver observer, int64_t max_dense_dimension,
                             absl::Duration load_timeout)
    : repository_(std::move(repository)),
      options_(std::move(options)),
      observer_(std::move(observer)),
      max_dense_dimension_(max_dense_dimension),
      load_timeout_(load_timeout) {}

std::vector<std::string> ModelRegistry::ScanRepository() const {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(repository_, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory(ec) && IsValidModelName(name) &&
        fs::exists(entry.path() / kModelConfigFile, ec)) {
      names.push_back(name);
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

bool ModelRegistry::ExistsInRepository(const std::string& name) const {
  std::error_code ec;
  return IsValidModelName(name) && fs::is_directory(fs::path(repository_) / name, ec);
}

int ModelRegistry::LoadAll() {
  int failures = 0;
  for (const std::string& name : ScanRepository()) {
    if (!Load(name).ok()) ++failures;
  }
  return failures;
}

absl::StatusOr<v1::ModelInfo> ModelRegistry::Load(const std::string& name) {
  if (!ExistsInRepository(name)) {
    return absl::NotFoundError(absl::StrCat("model ", Quoted(name), " is not in the repository"));
  }
  uint64_t unloads_at_start = 0;
  {
    absl::MutexLock lock(&mu_);
    Entry& entry = entries_[name];
    if (entry.loading) {
      return absl::UnavailableError(absl::StrCat(
          "model ", Quoted(name), " is already loading; retry once it is READY or FAILED"));
    }
    if (entry.abandoned_load != nullptr) {
      if (!entry.abandoned_load->HasBeenNotified()) {
        return absl::UnavailableError(
            absl::StrCat("model ", Quoted(name),
                         ": its last load, abandoned at the load timeout, is still running (a "
                         "model call that never returns?); it is not loaded again until that "
                         "thread ends, or the server restarts"));
      }
      entry.abandoned_load.reset();
    }
    entry.loading = true;
    if (entry.model == nullptr) entry.state = v1::MODEL_LOADING;
    unloads_at_start = entry.unloads;
  }
  const auto start = std::chrono::steady_clock::now();
  // The load runs on a thread of its own, so that a model call that never
  // returns (LibTorch cannot be interrupted) costs that thread, not the
  // caller: after load_timeout_ the caller gives up and the model is FAILED.
  // The thread owns copies of everything it reads.
  struct Shared {
    std::shared_ptr<absl::Notification> done = std::make_shared<absl::Notification>();
    absl::StatusOr<std::shared_ptr<const LoadedModel>> loaded;
  };
  auto shared = std::make_shared<Shared>();
  StartLoadThread([shared, repository = repository_, name, options = options_,
                   max_dense_dimension = max_dense_dimension_, start] {
    try {
      shared->loaded = LoadModelDirectory(repository, name, options, max_dense_dimension, start);
    } catch (const std::exception& e) {
      // LibTorch throws (e.g. an allocation the machine cannot make) where
      // the loaders do not catch: this model fails, the others go on.
      shared->loaded = absl::InternalError(absl::StrCat("loading failed: ", e.what()));
    }
    shared->done->Notify();
  });
  absl::StatusOr<std::shared_ptr<const LoadedModel>> loaded;
  bool abandoned = false;
  if (shared->done->WaitForNotificationWithTimeout(load_timeout_)) {
    loaded = shared->loaded;
  } else {
    abandoned = true;
    loaded = absl::DeadlineExceededError(absl::StrCat(
        "loading did not finish within ", absl::FormatDuration(load_timeout_),
        " (server flag --model_load_timeout_seconds); a model call that never returns? The "
        "load was abandoned: its thread and memory stay until the server restarts"));
    std::fprintf(stderr, "memaudit-server: model %s: %s\n", Quoted(name).c_str(),
                 std::string(loaded.status().message()).c_str());
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  bool dropped = false;
  absl::StatusOr<v1::ModelInfo> result;
  {
    absl::MutexLock lock(&mu_);
    Entry& entry = entries_[name];
    entry.loading = false;
    if (abandoned) entry.abandoned_load = shared->done;
    if (entry.unloads != unloads_at_start) {
      dropped = true;
    } else if (!loaded.ok()) {
      // Paths in errors are relative to the repository (callers need not
      // learn the server's directory layout).
      const std::string message = absl::StrReplaceAll(
          loaded.status().message(), {{(fs::path(repository_) / "").string(), ""}});
      entry.last_error = message;
      if (entry.model == nullptr) entry.state = v1::MODEL_FAILED;
      result = absl::Status(LoadErrorCode(loaded.status().code()), message);
    } else {
      entry.model = *loaded;
      entry.state = v1::MODEL_READY;
      entry.last_error.clear();
      result = InfoLocked(name, entry);
    }
  }
  if (observer_) observer_(name, loaded.ok(), seconds);
  if (!dropped) return result;
  // Unloaded meanwhile: the unload wins, and the observer hears that the
  // model is not serving after all.
  if (observer_) observer_(name, false, 0.0);
  return absl::AbortedError(
      absl::StrCat("model ", Quoted(name), " was unloaded while it loaded; load it again"));
}

absl::StatusOr<v1::ModelInfo> ModelRegistry::Unload(const std::string& name) {
  v1::ModelInfo info;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      if (!ExistsInRepository(name)) {
        return absl::NotFoundError(
            absl::StrCat("model ", Quoted(name), " is not in the repository"));
      }
      it = entries_.emplace(name, Entry{}).first;
    }
    it->second.model.reset();
    it->second.state = v1::MODEL_UNLOADED;
    ++it->second.unloads;
    info = InfoLocked(name, it->second);
  }
  if (observer_) observer_(name, false, 0.0);
  return info;
}

absl::StatusOr<std::shared_ptr<const LoadedModel>> ModelRegistry::Get(
    const std::string& name) const {
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = entries_.find(name);
    if (it != entries_.end()) {
      if (it->second.model != nullptr) return it->second.model;
      switch (it->second.state) {
        case v1::MODEL_LOADING:
          return absl::UnavailableError(absl::StrCat("model ", Quoted(name), " is still loading"));
        case v1::MODEL_FAILED:
          return absl::UnavailableError(
              absl::StrCat("model ", Quoted(name), " failed to load: ", it->second.last_error));
        default:
          return absl::UnavailableError(
              absl::StrCat("model ", Quoted(name), " is not loaded; load it first"));
      }
    }
  }
  if (ExistsInRepository(name)) {
    return absl::UnavailableError(
        absl::StrCat("model ", Quoted(name), " is not loaded; load it first"));
  }
  return absl::NotFoundError(absl::StrCat("model ", Quoted(name), " not found"));
}

v1::ModelInfo ModelRegistry::InfoLocked(const std::string& name, const Entry& entry) const {
  v1::ModelInfo info;
  info.set_name(name);
  info.set_state(entry.state);
  info.set_last_error(ReplaceInvalidUtf8(entry.last_error));  // may quote the files' bytes
  if (entry.model != nullptr) {
    const DiffusionNetwork& network = *entry.model->network;
    *info.mutable_config() = network.config();
    info.set_device(network.device().str());
    info.set_dtype(DtypeName(network.network_dtype()));
    info.set_checksum(entry.model->checksum);
    info.set_load_seconds(entry.model->load_seconds);
    info.set_dimension(network.sample_numel());
    if (entry.model->reference) info.set_reference_size(entry.model->reference->size());
  }
  return info;
}

absl::StatusOr<v1::ModelInfo> ModelRegistry::Info(const std::string& name) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = entries_.find(name);
  if (it != entries_.end()) return InfoLocked(name, it->second);
  if (ExistsInRepository(name)) return InfoLocked(name, Entry{});
  return absl::NotFoundError(absl::StrCat("model ", Quoted(name), " not found"));
}

std::vector<v1::ModelInfo> ModelRegistry::List() const {
  std::vector<v1::ModelInfo> infos;
  absl::ReaderMutexLock lock(&mu_);
  for (const std::string& name : ScanRepository()) {
    auto it = entries_.find(name);
    infos.push_back(InfoLocked(name, it != entries_.end() ? it->second : Entry{}));
  }
  return infos;
}

}  // namespace memaudit::server
