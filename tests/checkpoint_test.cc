#include "core/checkpoint/load_model.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "core/checkpoint/script_module.h"
#include "core/model/denoiser.h"
#include "core/runtime/archive_check.h"
#include "core/runtime/tensor_file.h"
#include "core/verdict/reference_set.h"
#include "google/protobuf/text_format.h"
#include "tests/test_util.h"
#include "tools/toy/gaussian_mixture.h"
#include "tools/toy/model_directory.h"

namespace memaudit {
namespace {

using testing::ScratchDir;

// Writes a model directory whose model.pt has the given TorchScript forward.
void WriteModuleWithSource(const std::string& repository, const v1::ModelConfig& config,
                           const std::string& source) {
  ASSERT_TRUE(testing::WriteScriptedModel(repository, config, source).ok());
}

TEST(CheckpointTest, LoadsCppArchive) {
  ScratchDir dir;
  toy::GaussianMixture mixture = toy::RandomGaussianMixture(4, 3, /*seed=*/1);
  auto checkpoint = testing::WriteAndLoadMixture(
      dir.path(), "gmm", mixture, v1::NoiseSchedule::LINEAR, v1::EPSILON, at::kFloat);
  ASSERT_NE(checkpoint, nullptr);
  EXPECT_EQ(checkpoint->config().name(), "gmm");
  EXPECT_EQ(checkpoint->sample_numel(), 4);
  EXPECT_EQ(checkpoint->dtype(), at::kFloat);
  EXPECT_TRUE(checkpoint->device().is_cpu());
  at::Tensor x = at::randn({5, 4});
  at::Tensor out = checkpoint->Forward(x, at::full({5}, 10, at::kLong), at::Tensor());
  EXPECT_EQ(out.sizes(), x.sizes());
}

TEST(CheckpointTest, LoadsPythonTracedAndScriptedArchives) {
  ScratchDir dir;
  testing::RunCommand(std::string(MEMAUDIT_PYTHON) + " " + MEMAUDIT_FIXTURES +
                      "/make_python_archives.py " + dir.path());
  auto traced = LoadModel(dir.Join("py_traced"));
  ASSERT_TRUE(traced.ok()) << traced.status();
  auto scripted = LoadModel(dir.Join("py_scripted"));
  ASSERT_TRUE(scripted.ok()) << scripted.status();
  // The scripted model is class-conditional: the null class is num_classes.
  Denoiser denoiser(*scripted);
  at::Tensor x = at::randn({3, 3});
  at::Tensor labels = at::tensor({0, 3, 4}, at::kLong);
  at::Tensor out = denoiser.Epsilon(x, at::full({3}, 5, at::kLong), labels);
  EXPECT_EQ(out.sizes(), x.sizes());
  EXPECT_TRUE(at::equal(scripted->get()->NullCondition(2), at::full({2}, 4, at::kLong)));
  // A Python torch.save tensor is a valid reference set.
  auto reference = ReferenceSet::Load(dir.Join("reference.pt"), {3});
  ASSERT_TRUE(reference.ok()) << reference.status();
  EXPECT_EQ(reference->size(), 5);
  EXPECT_FLOAT_EQ(reference->items().sum().item<float>(), 105.0f);
}

TEST(CheckpointTest, CppTensorFilesLoadInPython) {
  ScratchDir dir;
  at::Tensor tensor = at::arange(12, at::kFloat).reshape({4, 3}) * 0.5;
  ASSERT_TRUE(SaveTensorFile(dir.Join("t.pt"), tensor).ok());
  const std::string output =
      testing::RunCommand(std::string(MEMAUDIT_PYTHON) + " " + MEMAUDIT_FIXTURES +
                          "/check_cpp_tensor_file.py " + dir.Join("t.pt"));
  EXPECT_EQ(output, "33.000000 [4, 3]\n");
  auto back = LoadTensorFile(dir.Join("t.pt"));
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(at::equal(*back, tensor));
}

// A tensor file whose shape claims more than its stored data: LibTorch
// builds it without a check, and the first read of it crashed the server
// (a reference set of [2^22, 8] over 16 floats) or served other memory as
// training items. Refused at load, naming the file; the whole fits.
TEST(CheckpointTest, ATensorLargerThanItsStoredDataIsRefused) {
  ScratchDir dir;
  const auto make = [&](const std::string& name, int64_t rows, int64_t cols, int64_t count) {
    testing::RunCommand(std::string(MEMAUDIT_PYTHON) + " " + MEMAUDIT_FIXTURES +
                        "/make_oversized_tensor_file.py " + dir.Join(name) + " " +
                        std::to_string(rows) + " " + std::to_string(cols) + " " +
                        std::to_string(count));
  };
  make("huge.pt", int64_t{1} << 22, 8, 16);
  make("one_over.pt", 3, 6, 17);  // 18 elements over 17 floats
  make("fits.pt", 2, 8, 16);
  for (const std::string name : {"huge.pt", "one_over.pt"}) {
    auto loaded = LoadTensorFile(dir.Join(name));
    ASSERT_FALSE(loaded.ok()) << name;
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(loaded.status().message().find(dir.Join(name) + ": shape ["), std::string::npos)
        << loaded.status();
    EXPECT_NE(loaded.status().message().find("does not fit the"), std::string::npos)
        << loaded.status();
  }
  auto reference = ReferenceSet::Load(dir.Join("huge.pt"), {8});
  EXPECT_EQ(reference.status().code(), absl::StatusCode::kInvalidArgument) << reference.status();
  auto fits = LoadTensorFile(dir.Join("fits.pt"));
  ASSERT_TRUE(fits.ok()) << fits.status();
  EXPECT_EQ(fits->sizes().vec(), (std::vector<int64_t>{2, 8}));
}

// A record shorter than the storage its pickle declares: LibTorch sizes the
// storage from the pickle and fills it from the record, so reading it read
// past the buffer (a fuzzed model.pt crashed the server in its probe
// forward). Refused before LibTorch reads the archive, for model.pt's state
// (data.pkl), its code's constants (constants.pkl) and torch.save files;
// so are pickles whose lengths or stack LibTorch's unpickler would trust.
TEST(CheckpointTest, AStorageLargerThanItsRecordIsRefusedBeforeItIsRead) {
  ScratchDir dir;
  testing::RunCommand(std::string(MEMAUDIT_PYTHON) + " " + MEMAUDIT_FIXTURES +
                      "/make_damaged_archives.py " + dir.path());
  // The zip directory as Python's zipfile reads it.
  auto directory = ReadZipDirectory(dir.Join("module.pt"));
  ASSERT_TRUE(directory.ok()) << directory.status();
  std::map<std::string, uint64_t> expected;
  std::string first, name;
  std::ifstream sizes(dir.Join("module.sizes"));
  for (uint64_t size = 0; sizes >> name >> size;) {
    if (first.empty()) first = name;
    expected[name] = size;
  }
  ASSERT_GE(expected.size(), 7u);  // LibTorch 2.x writes a few more records than 1.13
  EXPECT_EQ(directory->sizes, expected);
  EXPECT_EQ(directory->first, first);

  for (const std::string file : {"module.pt", "module_long_string.pt", "module_deflated.pt"}) {
    // Strings and comments nest nothing: they do not count toward the
    // length of a statement. Deflated records are checked and load like
    // stored ones (torch writes them stored; zip tools may deflate them).
    auto intact = LoadScriptModule(dir.Join(file), at::kCPU, std::nullopt);
    ASSERT_TRUE(intact.ok()) << intact.status();
    EXPECT_TRUE(at::equal(intact->module.forward({at::zeros({4})}).toTensor(),
                          at::tensor({1.0f, 2.0f, 3.0f, 4.0f})));
  }
  struct Case {
    std::string file, message;
  };
  const std::string kCrafted = " (a truncated or crafted file)";
  const std::string kRecursion = " (TorchScript's parser recurses through it)";
  for (const Case& damaged : std::vector<Case>{
           {"module_short_data.pt",
            "data.pkl declares 16 bytes for record module/data/0, which holds 8" + kCrafted},
           {"module_short_data_deflated.pt",
            "data.pkl declares 16 bytes for record module/data/0, which holds 8" + kCrafted},
           {"module_short_const.pt",
            "constants.pkl declares 16 bytes for record module/constants/0, which holds 8" +
                kCrafted},
           // LibTorch's unpickler allocated the 2 GiB before reading, and
           // popped from the empty stack (a crash).
           {"module_big_string.pt",
            "module/data.pkl: a length of 2147483647 bytes with 11 left at byte 2" + kCrafted},
           {"module_empty_stack.pt",
            "module/constants.pkl: an opcode that finds too few items at byte 2" + kCrafted},
           // TorchScript's parser recursed through them until the stack
           // overflowed (a crash).
           {"module_deep.pt",
            "module/code/__torch__.py: brackets nested deeper than 4096 at line 12" + kRecursion},
           {"module_long.pt",
            "module/code/__torch__.py: a statement longer than 32768 bytes at line 12" +
                kRecursion}}) {
    auto loaded = LoadScriptModule(dir.Join(damaged.file), at::kCPU, std::nullopt);
    ASSERT_FALSE(loaded.ok()) << damaged.file;
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(loaded.status().message(), dir.Join(damaged.file) + ": " + damaged.message);
  }
  ASSERT_TRUE(LoadTensorFile(dir.Join("tensor.pt")).ok());
  auto short_tensor = LoadTensorFile(dir.Join("tensor_short.pt"));
  ASSERT_FALSE(short_tensor.ok());
  EXPECT_NE(short_tensor.status().message().find(
                "data.pkl declares 64 bytes for record tensor/data/0, which holds 8"),
            std::string::npos)
      << short_tensor.status();
}

TEST(CheckpointTest, MissingDirectoryAndFiles) {
  ScratchDir dir;
  auto missing = LoadModel(dir.Join("nope"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope"), std::string::npos);

  std::filesystem::create_directories(dir.Join("empty"));
  auto no_config = LoadModel(dir.Join("empty"));
  EXPECT_EQ(no_config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(no_config.status().message().find("config.pbtxt"), std::string::npos);

  std::filesystem::create_directories(dir.Join("nomodel"));
  v1::ModelConfig config = testing::MixtureConfig("nomodel", 2);
  std::string text;
  google::protobuf::TextFormat::PrintToString(config, &text);
  testing::WriteFile(dir.Join("nomodel/config.pbtxt"), text);
  auto no_model = LoadModel(dir.Join("nomodel"));
  EXPECT_EQ(no_model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(no_model.status().message().find("model.pt"), std::string::npos);
}

TEST(CheckpointTest, CorruptArchiveIsAClearError) {
  ScratchDir dir;
  std::filesystem::create_directories(dir.Join("bad"));
  std::string text;
  google::protobuf::TextFormat::PrintToString(testing::MixtureConfig("bad", 2), &text);
  testing::WriteFile(dir.Join("bad/config.pbtxt"), text);
  testing::WriteFile(dir.Join("bad/model.pt"), "this is not a zip archive");
  auto loaded = LoadModel(dir.Join("bad"));
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find("model.pt"), std::string::npos) << loaded.status();
  EXPECT_NE(loaded.status().message().find("TorchScript"), std::string::npos);
}

TEST(CheckpointTest, NameMustMatchDirectory) {
  ScratchDir dir;
  WriteModuleWithSource(dir.path(), testing::MixtureConfig("right", 2),
                        "def forward(self, x: Tensor, t: Tensor) -> Tensor:\n    return x\n");
  std::filesystem::rename(dir.Join("right"), dir.Join("wrong"));
  auto loaded = LoadModel(dir.Join("wrong"));
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find("name"), std::string::npos) << loaded.status();
}

TEST(CheckpointTest, WrongSignatureNamesTheContract) {
  ScratchDir dir;
  // A class-conditional config, but forward takes (x, t) only.
  WriteModuleWithSource(
      dir.path(),
      testing::MixtureConfig("sig", 2, v1::NoiseSchedule::LINEAR, v1::EPSILON, /*num_classes=*/3),
      "def forward(self, x: Tensor, t: Tensor) -> Tensor:\n    return x\n");
  auto loaded = LoadModel(dir.Join("sig"));
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find("forward(x: Tensor, t: Tensor, y: Tensor)"),
            std::string::npos)
      << loaded.status();
}

TEST(CheckpointTest, ForwardThatFailsOnProbeIsReported) {
  ScratchDir dir;
  // Expects a 3-D x; the contract gives [B, 2].
  WriteModuleWithSource(dir.path(), testing::MixtureConfig("probe", 2),
                        "def forward(self, x: Tensor, t: Tensor) -> Tensor:\n"
                        "    return x.permute(0, 2, 1)\n");
  auto loaded = LoadModel(dir.Join("probe"));
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find("probe call"), std::string::npos) << loaded.status();
}

TEST(CheckpointTest, OutputShapeMismatchIsReported) {
  ScratchDir dir;
  WriteModuleWithSource(dir.path(), testing::MixtureConfig("shape", 2),
                        "def forward(self, x: Tensor, t: Tensor) -> Tensor:\n"
                        "    return x[:, :1]\n");
  auto loaded = LoadModel(dir.Join("shape"));
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find("returned shape [2, 1]"), std::string::npos)
      << loaded.status();
}

// A forward that returns integers cannot be a denoiser's output.
TEST(CheckpointTest, NonFloatingOutputIsReported) {
  ScratchDir dir;
  WriteModuleWithSource(dir.path(), testing::MixtureConfig("ints", 2),
                        "def forward(self, x: Tensor, t: Tensor) -> Tensor:\n"
                        "    return x.long()\n");
  auto loaded = LoadModel(dir.Join("ints"));
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument) << loaded.status();
  EXPECT_NE(loaded.status().message().find("non-floating-point"), std::string::npos)
      << loaded.status();
}

// Changing precision must leave integer buffers alone (Module::to(dtype)
// would turn an index table into floats and break index_select).
TEST(CheckpointTest, Float64LoadKeepsIntegerBuffers) {
  ScratchDir dir;
  torch::jit::Module module("__torch__.memaudit.test.Permute");
  module.register_buffer("order", at::tensor({1, 0}, at::kLong));
  module.register_buffer("scale", at::full({2}, 2.0, at::kFloat));
  module.define(
      "def forward(self, x: Tensor, t: Tensor) -> Tensor:\n"
      "    return x.index_select(1, self.order) * self.scale\n");
  ASSERT_TRUE(toy::WriteModelDirectory(dir.path(), testing::MixtureConfig("perm", 2), module).ok());
  CheckpointOptions options;
  options.dtype = at::kDouble;
  auto checkpoint = LoadModel(dir.Join("perm"), options);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  at::Tensor x = at::tensor({1.0, 3.0}, at::kDouble).view({1, 2});
  at::Tensor out = (*checkpoint)->Forward(x, at::zeros({1}, at::kLong), at::Tensor());
  EXPECT_EQ(out.scalar_type(), at::kDouble);
  EXPECT_TRUE(at::equal(out, at::tensor({6.0, 2.0}, at::kDouble).view({1, 2})));
}

TEST(CheckpointTest, UnavailableOrInvalidDevice) {
  ScratchDir dir;
  WriteModuleWithSource(dir.path(), testing::MixtureConfig("dev", 2),
                        "def forward(self, x: Tensor, t: Tensor) -> Tensor:\n    return x\n");
  CheckpointOptions options;
  options.device = "banana";
  EXPECT_EQ(LoadModel(dir.Join("dev"), options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Both halves assert: without CUDA "cuda:0" is refused with a reason; with
// CUDA the model loads there and runs.
TEST(CheckpointTest, CudaDeviceLoadsWhereCudaExistsAndIsRefusedElsewhere) {
  ScratchDir dir;
  WriteModuleWithSource(dir.path(), testing::MixtureConfig("dev", 2),
                        "def forward(self, x: Tensor, t: Tensor) -> Tensor:\n    return x\n");
  CheckpointOptions options;
  options.device = "cuda:0";
  auto loaded = LoadModel(dir.Join("dev"), options);
  if (at::hasCUDA()) {
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_TRUE((*loaded)->device().is_cuda());
  } else {
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(loaded.status().message().find("CUDA"), std::string::npos);
  }
}

}  // namespace
}  // namespace memaudit
