// Replays the seed corpora of the libFuzzer harnesses without libFuzzer, so
// that the test suite builds every harness with the normal compiler and
// checks that each seed still passes its invariants (a failed FUZZ_CHECK
// aborts). Each harness is compiled into this program under entry-point
// names of its own (fuzz/CMakeLists.txt renames LLVMFuzzerTestOneInput and
// LLVMFuzzerInitialize per source file). Fuzzing itself: scripts/fuzz.sh.
//
// Usage: fuzz_replay HARNESS CORPUS_DIRECTORY
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" {
int ReplayModelConfig(const uint8_t* data, size_t size);
int InitModelConfig(int* argc, char*** argv);
int ReplayTensorCodec(const uint8_t* data, size_t size);
int InitTensorCodec(int* argc, char*** argv);
int ReplayPlans(const uint8_t* data, size_t size);
int InitPlans(int* argc, char*** argv);
int ReplayTokenizer(const uint8_t* data, size_t size);
}

namespace {

struct Harness {
  const char* name;
  int (*init)(int*, char***);  // may be null
  int (*run)(const uint8_t*, size_t);
};

constexpr Harness kHarnesses[] = {
    {"fuzz_model_config", InitModelConfig, ReplayModelConfig},
    {"fuzz_tensor_codec", InitTensorCodec, ReplayTensorCodec},
    {"fuzz_plans", InitPlans, ReplayPlans},
    {"fuzz_tokenizer", nullptr, ReplayTokenizer},
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s HARNESS CORPUS_DIRECTORY\n", argv[0]);
    return 2;
  }
  const std::string name = argv[1];
  const Harness* harness = nullptr;
  for (const Harness& candidate : kHarnesses) {
    if (name == candidate.name) harness = &candidate;
  }
  if (harness == nullptr) {
    std::fprintf(stderr, "fuzz_replay: unknown harness '%s'\n", name.c_str());
    return 2;
  }
  std::vector<std::filesystem::path> files;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(argv[2], error)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  if (error || files.empty()) {
    std::fprintf(stderr, "fuzz_replay: no corpus files in %s\n", argv[2]);
    return 2;
  }
  std::sort(files.begin(), files.end());
  if (harness->init != nullptr) harness->init(&argc, &argv);
  for (const std::filesystem::path& file : files) {
    std::ifstream in(file, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::printf("%s: %s (%zu bytes)\n", name.c_str(), file.filename().c_str(), bytes.size());
    std::fflush(stdout);
    harness->run(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  }
  std::printf("%s: %zu inputs replayed, every invariant held\n", name.c_str(), files.size());
  return 0;
}
