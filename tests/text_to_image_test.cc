// Text-to-image model directories (docs/TEXT_TO_IMAGE.md §2): the text
// encoder and the latent decoder a Checkpoint loads with its model, checked
// against oracles written here (a table-lookup encoder, a nearest-neighbour
// upsampling decoder) and against the tokenizer used on its own.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/jit/api/module.h>

#include <cmath>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_join.h"
#include "core/audit/sample_curvature.h"
#include "core/checkpoint/latent_decoder.h"
#include "core/checkpoint/load_model.h"
#include "core/checkpoint/text_encoder.h"
#include "core/early/token_attribution.h"
#include "core/model/denoiser.h"
#include "core/runtime/tensor_file.h"
#include "core/text/tokenizer.h"
#include "core/verdict/reference_set.h"
#include "google/protobuf/text_format.h"
#include "tests/test_util.h"
#include "tools/toy/model_directory.h"

namespace memaudit {
namespace {

namespace fs = std::filesystem;
using testing::ScratchDir;

// The CLIP-style tokenizer.json the tokenizer test compares with the
// reference: 1,899 ids, <|endoftext|> = 1898.
const std::string kClipTokenizer =
    std::string(MEMAUDIT_SOURCE_DIR) + "/tests/tokenizer/clip_style/tokenizer.json";
constexpr int64_t kVocabulary = 1899;
constexpr int64_t kEndOfText = 1898;
constexpr int64_t kLength = 8, kWidth = 4;

// An embedding table [kVocabulary, kWidth], the encoder's whole state.
at::Tensor Table() {
  at::manual_seed(11);
  return at::randn({kVocabulary, kWidth});
}

// text_encoder.pt: forward(ids) = table[ids], or `source` in its place;
// the table a buffer, or a parameter (as CLIP's token embedding is).
void WriteEncoder(const std::string& path, const std::string& source = "",
                  bool table_is_parameter = false) {
  torch::jit::Module module("__torch__.memaudit.test.TableEncoder");
  if (table_is_parameter) {
    module.register_parameter("table", Table(), /*is_buffer=*/false);
  } else {
    module.register_buffer("table", Table());
  }
  module.define(source.empty() ? R"(
def forward(self, ids: Tensor) -> Tensor:
    return self.table.index_select(0, ids.flatten()).view(ids.size(0), ids.size(1), 4)
)"
                               : source);
  module.save(path);
}

// vae_decoder.pt: each latent element becomes a 2×2 block of pixels.
void WriteDecoder(const std::string& path, const std::string& source = "") {
  torch::jit::Module module("__torch__.memaudit.test.Upsampler");
  module.register_parameter("scale", at::ones({1}), false);
  module.define(source.empty() ? R"(
def forward(self, z: Tensor) -> Tensor:
    return self.scale * z.repeat_interleave(2, 2).repeat_interleave(2, 3)
)"
                               : source);
  module.save(path);
}

// A text-to-image model "t2i": latents [1, 2, 2], embeddings [8, 4],
// images [1, 4, 4]; the denoiser's output depends on x and on c.
v1::ModelConfig TextConfig() {
  v1::ModelConfig config = testing::MixtureConfig("t2i", 4);
  config.clear_sample_shape();
  for (int64_t dim : {1, 2, 2}) config.add_sample_shape(dim);
  v1::Conditioning* conditioning = config.mutable_conditioning();
  conditioning->set_kind(v1::Conditioning::EMBEDDING);
  conditioning->add_embedding_shape(kLength);
  conditioning->add_embedding_shape(kWidth);
  conditioning->mutable_text_encoder()->set_max_length(kLength);
  return config;
}

constexpr char kDenoiser[] = R"(
def forward(self, x: Tensor, t: Tensor, c: Tensor) -> Tensor:
    return 0.5 * x * self.scale + c.mean([1, 2]).view(-1, 1, 1, 1)
)";

// Writes <repository>/t2i with `config` (which may be invalid: it is
// written as it is), the table encoder and the tokenizer.
std::string WriteTextModel(const std::string& repository, const v1::ModelConfig& config,
                           const std::string& denoiser = kDenoiser) {
  EXPECT_TRUE(
      testing::WriteScriptedModel(repository, testing::MixtureConfig("t2i", 4), denoiser).ok());
  const std::string dir = repository + "/" + config.name();
  std::string text;
  google::protobuf::TextFormat::PrintToString(config, &text);
  testing::WriteFile(dir + "/config.pbtxt", text);
  WriteEncoder(dir + "/" + TextEncoder::kModelFile);
  fs::copy_file(kClipTokenizer, dir + "/" + Tokenizer::kFileName);
  return dir;
}

std::vector<int64_t> IdsRow(const at::Tensor& ids, int64_t i) {
  const at::Tensor row = ids[i].contiguous();
  return std::vector<int64_t>(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel());
}

TEST(TextToImageTest, PromptsAreTokenizedAsTheTokenizerDoesAndEncodedByTheModule) {
  ScratchDir dir;
  WriteTextModel(dir.path(), TextConfig());
  auto checkpoint = LoadModel(dir.Join("t2i"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const TextEncoder* encoder = (*checkpoint)->text_encoder();
  ASSERT_NE(encoder, nullptr);
  EXPECT_EQ(encoder->max_length(), kLength);
  EXPECT_EQ(encoder->pad_id(), kEndOfText);  // no pad_token_id: <|endoftext|>
  EXPECT_EQ(encoder->tokenizer_source(), "tokenizer.json");
  auto tokenizer = Tokenizer::Load(kClipTokenizer);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();

  // 20 prompts: two network calls of kEncodeBatch = 16; short, long
  // (truncated), empty, unicode.
  std::vector<std::string> prompts;
  for (int i = 0; i < 20; ++i) {
    prompts.push_back(i % 5 == 0   ? ""
                      : i % 5 == 1 ? "a photo of an astronaut riding a horse on the moon, 4k"
                      : i % 5 == 2 ? "Ünïcödé çafé " + std::to_string(i)
                                   : "seven " + std::to_string(i));
  }
  auto ids = encoder->Tokenize(prompts);
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_EQ(ids->sizes(), (std::vector<int64_t>{20, kLength}));
  for (int i = 0; i < 20; ++i) {
    auto expected = (*tokenizer)->EncodeForModel(prompts[i], kLength, kEndOfText);
    ASSERT_TRUE(expected.ok());
    EXPECT_EQ(IdsRow(*ids, i), *expected) << prompts[i];
  }
  auto embeddings = encoder->Encode(prompts);
  ASSERT_TRUE(embeddings.ok()) << embeddings.status();
  const at::Tensor oracle = Table().index_select(0, ids->flatten()).view({20, kLength, kWidth});
  EXPECT_TRUE(at::equal(*embeddings, oracle));
  // The empty prompt stands for the null condition when no
  // null_condition.pt is given.
  EXPECT_TRUE(
      at::equal((*checkpoint)->NullCondition(3), oracle[0].unsqueeze(0).expand({3, -1, -1})));
}

// A prompt's own tokens as text: each, with the end-of-word suffix put
// back, is the vocabulary entry of the id at its position, and the
// positions skip BOS and stop before EOS and the padding.
TEST(TextToImageTest, TextTokensAreTheIdsAtTheirPositions) {
  ScratchDir dir;
  WriteTextModel(dir.path(), TextConfig());
  auto checkpoint = LoadModel(dir.Join("t2i"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const TextEncoder* encoder = (*checkpoint)->text_encoder();
  ASSERT_NE(encoder, nullptr);
  auto tokenizer = Tokenizer::Load(kClipTokenizer);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ(encoder->first_text_position(), 1);  // after <|startoftext|>
  for (const std::string prompt : {"seven seas", "a photo of an astronaut riding a horse", ""}) {
    auto tokens = encoder->TextTokens(prompt);
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    auto ids = (*tokenizer)->EncodeForModel(prompt, kLength, kEndOfText);
    ASSERT_TRUE(ids.ok());
    auto all = (*tokenizer)->Encode(prompt);
    ASSERT_TRUE(all.ok());
    // Cut as EncodeForModel cuts: kLength minus BOS and EOS.
    EXPECT_EQ(tokens->size(), std::min<size_t>(all->size() - 2, kLength - 2)) << prompt;
    std::string joined;
    for (size_t i = 0; i < tokens->size(); ++i) {
      // A trailing space stands for the vocabulary's "</w>".
      std::string entry = (*tokens)[i];
      if (!entry.empty() && entry.back() == ' ') entry.replace(entry.size() - 1, 1, "</w>");
      EXPECT_EQ((*tokenizer)->TokenToId(entry), (*ids)[1 + i])
          << prompt << " token " << i << " \"" << (*tokens)[i] << "\"";
      joined += (*tokens)[i];
    }
    if (all->size() - 2 <= kLength - 2) {
      EXPECT_EQ(joined, prompt.empty() ? "" : prompt + " ");
    }
  }
  EXPECT_EQ(*encoder->TextTokens("seven seas"),
            (std::vector<std::string>{"s", "ev", "en ", "s", "ea", "s "}));
  EXPECT_EQ(encoder->TextTokens("\xff").status().code(), absl::StatusCode::kInvalidArgument);
}

// Token attribution against its closed form. The denoiser adds
// a(c)·x with a(c) = Σ w_ij c_ij², so ε̂_c − ε̂_∅ = (a(c) − a(∅))·x_T and
// m = |a(c) − a(∅)|·‖x_T‖: ∂m/∂c_i = ±2‖x_T‖·(w_i ⊙ c_i), whose norm is
// each position's score, averaged over the seeds' x_T.
TEST(TextToImageTest, TokenAttributionIsTheGradientOfWensMetricPerPosition) {
  ScratchDir dir;
  WriteTextModel(dir.path(), TextConfig(), R"(
def forward(self, x: Tensor, t: Tensor, c: Tensor) -> Tensor:
    w = (torch.arange(8, dtype=c.dtype).view(1, 8, 1) + 1.0) * (torch.arange(4, dtype=c.dtype).view(1, 1, 4) + 1.0)
    return 0.5 * x * self.scale + (w * c * c).sum([1, 2]).view(-1, 1, 1, 1) * x
)");
  auto checkpoint = LoadModel(dir.Join("t2i"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  Denoiser denoiser(*checkpoint);
  auto embedding = (*checkpoint)->text_encoder()->Encode({"seven seas"});
  ASSERT_TRUE(embedding.ok()) << embedding.status();
  const std::vector<uint64_t> seeds = {3, 4, 5};
  SamplerOptions sampler;
  sampler.num_steps = 20;
  sampler.steps_offset = 1;
  // With respect to the condition's own rows (the positions).
  const at::Tensor leaf = (*embedding)[0].detach().clone().requires_grad_(true);
  GradientInput input{leaf.unsqueeze(0), leaf, {}};
  for (int64_t i = 0; i < kLength; ++i) input.rows.push_back(i);
  auto attribution = ComputeTokenGradients(denoiser, seeds, input, sampler);
  ASSERT_TRUE(attribution.ok()) << attribution.status();
  EXPECT_EQ(attribution->samples, 3);
  // The low-noise timestep: leading spacing 951, 901, …, 101, 51, 1.
  EXPECT_EQ(attribution->timestep, 101);
  ASSERT_EQ(attribution->scores.size(), static_cast<size_t>(kLength));
  double noise_norm = 0;
  const at::Tensor noise = InitialNoise(**checkpoint, seeds).to(at::kDouble);
  for (int64_t b = 0; b < 3; ++b) noise_norm += noise[b].norm().item<double>() / 3;
  const at::Tensor c = embedding->to(at::kDouble)[0];
  for (int64_t i = 0; i < kLength; ++i) {
    const at::Tensor w = (i + 1.0) * (at::arange(4, at::kDouble) + 1.0);
    const double expected = 2 * noise_norm * (w * c[i]).norm().item<double>();
    EXPECT_NEAR(attribution->scores[i], expected, 1e-4 * expected) << i;
  }
  input.rows = {kLength};
  EXPECT_EQ(ComputeTokenGradients(denoiser, seeds, input, sampler).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ComputeTokenGradients(denoiser, {}, input, sampler).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Through the encoder: the table encoder's output rows are table rows, so
// the gradient with respect to the token-embedding table, at each token's
// id, is the gradient with respect to the condition at the token's
// position (no token repeats in the prompt): both ways agree.
TEST(TextToImageTest, TokenAttributionThroughTheEncoderMatchesThePositions) {
  ScratchDir dir;
  WriteTextModel(dir.path(), TextConfig(), R"(
def forward(self, x: Tensor, t: Tensor, c: Tensor) -> Tensor:
    return 0.5 * x * self.scale + torch.tanh(c * x.mean()).sum([1, 2]).view(-1, 1, 1, 1)
)");
  WriteEncoder(dir.Join("t2i/" + std::string(TextEncoder::kModelFile)), "",
               /*table_is_parameter=*/true);
  auto checkpoint = LoadModel(dir.Join("t2i"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const TextEncoder& encoder = *(*checkpoint)->text_encoder();
  ASSERT_TRUE(encoder.has_token_table());
  Denoiser denoiser(*checkpoint);
  const std::string prompt = "x y z w";  // four distinct one-letter tokens
  auto encoding = encoder.EncodeDifferentiably(prompt);
  ASSERT_TRUE(encoding.ok()) << encoding.status();
  EXPECT_EQ(encoding->text_tokens, *encoder.TextTokens(prompt));
  ASSERT_EQ(encoding->text_ids.size(), 4u);
  const std::vector<uint64_t> seeds = {1, 2};
  auto by_table = ComputeTokenGradients(denoiser, seeds,
                                        {encoding->embedding, encoding->table, encoding->text_ids},
                                        SamplerOptions());
  ASSERT_TRUE(by_table.ok()) << by_table.status();
  const at::Tensor leaf = encoding->embedding.detach()[0].clone().requires_grad_(true);
  auto by_position = ComputeTokenGradients(denoiser, seeds, {leaf.unsqueeze(0), leaf, {1, 2, 3, 4}},
                                           SamplerOptions());
  ASSERT_TRUE(by_position.ok()) << by_position.status();
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_GT(by_table->scores[i], 0) << i;
    EXPECT_NEAR(by_table->scores[i], by_position->scores[i], 1e-6 * by_position->scores[i]) << i;
  }
  // A buffer is not a table to attribute by: the other encoder has none.
  WriteEncoder(dir.Join("t2i/" + std::string(TextEncoder::kModelFile)));
  auto without = LoadModel(dir.Join("t2i"));
  ASSERT_TRUE(without.ok()) << without.status();
  EXPECT_FALSE((*without)->text_encoder()->has_token_table());
  EXPECT_EQ((*without)->text_encoder()->EncodeDifferentiably(prompt).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// Token deletions against the tokenizer and their closed form. Each row of
// EncodeWithEachTokenDeleted is the encoding of the prompt without that
// token (here: without that word, each word being one token); with the
// denoiser of the gradient test, m(c) = |a(c) − a(∅)|·‖x_T‖, so a token's
// score is (|a(c) − a(∅)| − |a(c without it) − a(∅)|)·mean ‖x_T‖. The
// prompt's 18 tokens take two network calls of kDeletionBatch rows.
TEST(TextToImageTest, TokenDeletionsAreTheDropOfWensMetric) {
  constexpr int64_t kLong = 24;
  static_assert(kDeletionBatch < 19);
  ScratchDir dir;
  v1::ModelConfig config = TextConfig();
  config.mutable_conditioning()->set_embedding_shape(0, kLong);
  config.mutable_conditioning()->mutable_text_encoder()->set_max_length(kLong);
  WriteTextModel(dir.path(), config, R"(
def forward(self, x: Tensor, t: Tensor, c: Tensor) -> Tensor:
    w = (torch.arange(24, dtype=c.dtype).view(1, 24, 1) + 1.0) * (torch.arange(4, dtype=c.dtype).view(1, 1, 4) + 1.0)
    return 0.5 * x * self.scale + (w * c * c).sum([1, 2]).view(-1, 1, 1, 1) * x
)");
  auto checkpoint = LoadModel(dir.Join("t2i"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const TextEncoder& encoder = *(*checkpoint)->text_encoder();
  Denoiser denoiser(*checkpoint);
  std::vector<std::string> words;
  for (int i = 0; i < 18; ++i) words.push_back(std::string(1, "xyzw"[i % 4]));
  const std::string prompt = absl::StrJoin(words, " ");
  ASSERT_EQ(encoder.TextTokens(prompt)->size(), words.size());
  auto deletions = encoder.EncodeWithEachTokenDeleted(prompt);
  ASSERT_TRUE(deletions.ok()) << deletions.status();
  ASSERT_EQ(deletions->sizes().vec(), (std::vector<int64_t>{18, kLong, kWidth}));
  auto condition = encoder.Encode({prompt});
  ASSERT_TRUE(condition.ok()) << condition.status();
  const std::vector<uint64_t> seeds = {3, 4, 5};
  auto attribution =
      ComputeTokenDeletions(denoiser, seeds, *condition, *deletions, SamplerOptions());
  ASSERT_TRUE(attribution.ok()) << attribution.status();
  EXPECT_EQ(attribution->samples, 3);
  ASSERT_EQ(attribution->scores.size(), words.size());
  double noise_norm = 0;
  const at::Tensor noise = InitialNoise(**checkpoint, seeds).to(at::kDouble);
  for (int64_t b = 0; b < 3; ++b) noise_norm += noise[b].norm().item<double>() / 3;
  const at::Tensor w = (at::arange(kLong, at::kDouble).view({kLong, 1}) + 1.0) *
                       (at::arange(kWidth, at::kDouble).view({1, kWidth}) + 1.0);
  const auto a = [&](const at::Tensor& c) {
    const at::Tensor row = c.to(at::kDouble).cpu();
    return (w * row * row).sum().item<double>();
  };
  const double a_null = a(encoder.empty_prompt_embedding()[0]);
  const double m_prompt = std::abs(a((*condition)[0]) - a_null);
  // float32 rounding of the network's a(c), relative to its size
  const double tolerance = 1e-5 * (std::abs(a((*condition)[0])) + std::abs(a_null)) * noise_norm;
  int positive = 0;
  for (size_t i = 0; i < words.size(); ++i) {
    std::vector<std::string> rest = words;
    rest.erase(rest.begin() + static_cast<std::ptrdiff_t>(i));
    auto without = encoder.Encode({absl::StrJoin(rest, " ")});
    ASSERT_TRUE(without.ok()) << without.status();
    EXPECT_TRUE(at::allclose((*deletions)[static_cast<int64_t>(i)], (*without)[0])) << i;
    const double expected = (m_prompt - std::abs(a((*without)[0]) - a_null)) * noise_norm;
    EXPECT_NEAR(attribution->scores[i], expected, tolerance) << i;
    positive += expected > 0;
  }
  EXPECT_GT(positive, 0);  // the oracle is not all zeros
  // Any number of rows per call gives the same scores (1: a call per row;
  // 19: the prompt and its 18 deletions in one call).
  for (int64_t rows_per_call : {1, 5, 19}) {
    auto chunked = ComputeTokenDeletions(denoiser, seeds, *condition, *deletions, SamplerOptions(),
                                         {}, AttributionTimestep::kLowNoise, rows_per_call);
    ASSERT_TRUE(chunked.ok()) << chunked.status();
    for (size_t i = 0; i < words.size(); ++i) {
      EXPECT_NEAR(chunked->scores[i], attribution->scores[i], tolerance) << rows_per_call;
    }
  }
  EXPECT_EQ(ComputeTokenDeletions(denoiser, seeds, *condition, *deletions, SamplerOptions(), {},
                                  AttributionTimestep::kLowNoise, 0)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // A prompt without tokens has nothing to delete.
  auto none = encoder.EncodeWithEachTokenDeleted("");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->size(0), 0);
  auto empty =
      ComputeTokenDeletions(denoiser, seeds, *encoder.Encode({""}), *none, SamplerOptions());
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->scores.empty());
  EXPECT_EQ(ComputeTokenDeletions(denoiser, seeds, *condition, deletions->slice(1, 0, 4),
                                  SamplerOptions())
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      ComputeTokenDeletions(denoiser, {}, *condition, *deletions, SamplerOptions()).status().code(),
      absl::StatusCode::kInvalidArgument);
}

// A prompt cut at max_length: the deletions change only what the model
// saw (no token from beyond the cut moves in), padded with the configured
// pad id (0 here, as SD 2's tokenizer pads): row i is the encoding of the
// kept words without word i.
TEST(TextToImageTest, DeletionsOfACutPromptKeepItsCut) {
  ScratchDir dir;
  v1::ModelConfig config = TextConfig();
  config.mutable_conditioning()->mutable_text_encoder()->set_pad_token_id(0);
  WriteTextModel(dir.path(), config);
  auto checkpoint = LoadModel(dir.Join("t2i"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const TextEncoder& encoder = *(*checkpoint)->text_encoder();
  std::vector<std::string> words;
  for (int i = 0; i < 10; ++i) words.push_back(std::string(1, "xyzw"[i % 4]));
  const std::string prompt = absl::StrJoin(words, " ");
  const size_t kept = encoder.TextTokens(prompt)->size();
  ASSERT_EQ(kept, static_cast<size_t>(kLength - 2));  // BOS, 6 words, EOS
  auto deletions = encoder.EncodeWithEachTokenDeleted(prompt);
  ASSERT_TRUE(deletions.ok()) << deletions.status();
  ASSERT_EQ(deletions->size(0), static_cast<int64_t>(kept));
  for (size_t i = 0; i < kept; ++i) {
    std::vector<std::string> rest(words.begin(), words.begin() + static_cast<std::ptrdiff_t>(kept));
    rest.erase(rest.begin() + static_cast<std::ptrdiff_t>(i));
    auto without = encoder.Encode({absl::StrJoin(rest, " ")});
    ASSERT_TRUE(without.ok()) << without.status();
    EXPECT_TRUE(at::allclose((*deletions)[static_cast<int64_t>(i)], (*without)[0])) << i;
  }
}

TEST(TextToImageTest, NullConditionFileAndPadIdAndVocabMergesAreHonoured) {
  ScratchDir dir;
  v1::ModelConfig config = TextConfig();
  config.mutable_conditioning()->mutable_text_encoder()->set_pad_token_id(0);
  const std::string model = WriteTextModel(dir.path(), config);
  ASSERT_TRUE(SaveTensorFile(model + "/null_condition.pt", at::full({kLength, kWidth}, 7.0)).ok());
  // Stable Diffusion's folders ship vocab.json + merges.txt instead.
  std::ifstream in(kClipTokenizer);
  const nlohmann::json file = nlohmann::json::parse(in);
  std::ofstream(model + "/vocab.json") << file["model"]["vocab"].dump();
  std::ofstream merges(model + "/merges.txt");
  merges << "#version: 0.2\n";
  for (const auto& merge : file["model"]["merges"]) {
    merges << (merge.is_string() ? merge.get<std::string>()
                                 : merge[0].get<std::string>() + " " + merge[1].get<std::string>())
           << "\n";
  }
  merges.close();
  fs::remove(model + "/tokenizer.json");

  auto checkpoint = LoadModel(model);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const TextEncoder* encoder = (*checkpoint)->text_encoder();
  EXPECT_EQ(encoder->tokenizer_source(), "vocab.json + merges.txt");
  EXPECT_EQ(encoder->pad_id(), 0);
  auto reference = Tokenizer::LoadClipVocabAndMerges(model + "/vocab.json", model + "/merges.txt");
  ASSERT_TRUE(reference.ok()) << reference.status();
  auto ids = encoder->Tokenize({"a cat"});
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(IdsRow(*ids, 0), *(*reference)->EncodeForModel("a cat", kLength, 0));
  EXPECT_EQ(IdsRow(*ids, 0).back(), 0);  // padded with the configured id
  EXPECT_TRUE(at::equal((*checkpoint)->NullCondition(1), at::full({1, kLength, kWidth}, 7.0)));
}

TEST(TextToImageTest, BadTextModelDirectoriesNameTheFileAndTheProblem) {
  struct Case {
    std::string what;
    std::function<void(v1::ModelConfig*)> edit_config;
    std::function<void(const std::string&)> edit_directory;
    absl::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"no tokenizer",
       {},
       [](const std::string& d) { fs::remove(d + "/tokenizer.json"); },
       absl::StatusCode::kNotFound,
       "needs a tokenizer: tokenizer.json, or vocab.json and merges.txt"},
      {"no encoder",
       {},
       [](const std::string& d) { fs::remove(d + "/text_encoder.pt"); },
       absl::StatusCode::kNotFound,
       "text_encoder.pt: file does not exist"},
      {"encoder without config",
       [](v1::ModelConfig* c) { c->mutable_conditioning()->clear_text_encoder(); },
       {},
       absl::StatusCode::kInvalidArgument,
       "the directory has text_encoder.pt but conditioning.text_encoder is not set"},
      {"length differs from the embedding",
       [](v1::ModelConfig* c) {
         c->mutable_conditioning()->mutable_text_encoder()->set_max_length(9);
       },
       {},
       absl::StatusCode::kInvalidArgument,
       "conditioning.embedding_shape: a text encoder's embedding is [max_length, width] = [9, D]"},
      {"default length 77",
       [](v1::ModelConfig* c) {
         c->mutable_conditioning()->mutable_text_encoder()->clear_max_length();
       },
       {},
       absl::StatusCode::kInvalidArgument,
       "= [77, D]; got [8, 4]"},
      {"negative pad",
       [](v1::ModelConfig* c) {
         c->mutable_conditioning()->mutable_text_encoder()->set_pad_token_id(-1);
       },
       {},
       absl::StatusCode::kInvalidArgument,
       "conditioning.text_encoder.pad_token_id: must be >= 0"},
      {"too short for the special tokens",
       [](v1::ModelConfig* c) {
         c->mutable_conditioning()->mutable_text_encoder()->set_max_length(2);
         c->mutable_conditioning()->set_embedding_shape(0, 2);
       },
       {},
       absl::StatusCode::kInvalidArgument,
       "max_length 2 cannot hold the tokenizer's 2 special tokens"},
      {"wrong width",
       {},
       [](const std::string& d) {
         WriteEncoder(d + "/text_encoder.pt", R"(
def forward(self, ids: Tensor) -> Tensor:
    return self.table.index_select(0, ids.flatten()).view(ids.size(0), ids.size(1), 4)[:, :, :3]
)");
       },
       absl::StatusCode::kInvalidArgument,
       "text_encoder.pt: probe with the empty prompt's ids [1, 8] failed: forward returned shape "
       "[1, 8, 3], expected [1, 8, 4]"},
      {"two arguments",
       {},
       [](const std::string& d) {
         WriteEncoder(d + "/text_encoder.pt", R"(
def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
    return self.table
)");
       },
       absl::StatusCode::kInvalidArgument,
       "text_encoder.pt: forward takes 2 argument(s); expected"},
      {"pad id outside the table",
       [](v1::ModelConfig* c) {
         c->mutable_conditioning()->mutable_text_encoder()->set_pad_token_id(100000);
       },
       {},
       absl::StatusCode::kInvalidArgument,
       "text_encoder.pt: probe with the empty prompt's ids"},
      {"non-finite output",
       {},
       [](const std::string& d) {
         WriteEncoder(d + "/text_encoder.pt", R"(
def forward(self, ids: Tensor) -> Tensor:
    return self.table.index_select(0, ids.flatten()).view(ids.size(0), ids.size(1), 4) / 0.0
)");
       },
       absl::StatusCode::kInvalidArgument,
       "the text encoder returned non-finite values"},
      {"class-conditional with a text encoder",
       [](v1::ModelConfig* c) {
         c->mutable_conditioning()->set_kind(v1::Conditioning::CLASS_LABEL);
         c->mutable_conditioning()->set_num_classes(3);
       },
       {},
       absl::StatusCode::kInvalidArgument,
       "conditioning.text_encoder: needs EMBEDDING conditioning"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    ScratchDir dir;
    v1::ModelConfig config = TextConfig();
    if (c.edit_config) c.edit_config(&config);
    const std::string model = WriteTextModel(dir.path(), config);
    if (c.edit_directory) c.edit_directory(model);
    auto checkpoint = LoadModel(model);
    ASSERT_FALSE(checkpoint.ok());
    EXPECT_EQ(checkpoint.status().code(), c.code) << checkpoint.status();
    EXPECT_NE(checkpoint.status().message().find(c.message), std::string::npos)
        << checkpoint.status();
  }
}

TEST(TextToImageTest, TextThatCannotBeTokenizedIsRefusedNamingThePrompt) {
  ScratchDir dir;
  WriteTextModel(dir.path(), TextConfig());
  auto checkpoint = LoadModel(dir.Join("t2i"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const TextEncoder* encoder = (*checkpoint)->text_encoder();
  auto bad = encoder->Encode({"fine", std::string("caf\xc3", 4)});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("prompt 1: "), std::string::npos) << bad.status();
  auto long_prompt = encoder->Encode({std::string(TextEncoder::kMaxPromptBytes + 1, 'a')});
  EXPECT_EQ(long_prompt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(long_prompt.status().message().find("prompt 0: 65537 bytes"), std::string::npos)
      << long_prompt.status();
}

v1::ModelConfig LatentConfig() {
  v1::ModelConfig config = TextConfig();
  config.mutable_latent()->set_scaling_factor(0.5);
  for (int64_t dim : {1, 4, 4}) config.mutable_latent()->add_image_shape(dim);
  return config;
}

TEST(TextToImageTest, LatentsAreScaledAndDecoded) {
  ScratchDir dir;
  const std::string model = WriteTextModel(dir.path(), LatentConfig());
  WriteDecoder(model + "/" + LatentDecoder::kModelFile);
  auto checkpoint = LoadModel(model);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const LatentDecoder* decoder = (*checkpoint)->latent_decoder();
  ASSERT_NE(decoder, nullptr);
  at::manual_seed(3);
  const at::Tensor latents = at::randn({6, 1, 2, 2});  // two decoder calls of 4 and 2
  auto images = decoder->Decode(latents);
  ASSERT_TRUE(images.ok()) << images.status();
  const at::Tensor oracle =
      (latents / 0.5).repeat_interleave(2, 2).repeat_interleave(2, 3);  // z / scaling_factor
  EXPECT_TRUE(at::allclose(*images, oracle));
  EXPECT_EQ(decoder->Decode(at::zeros({1, 4})).status().code(), absl::StatusCode::kInvalidArgument);
}

// Modules that pass the load probe and misbehave on real inputs: the model
// is at fault, not the caller, so FAILED_PRECONDITION naming the file (an
// INVALID_ARGUMENT read as the caller's error and raised no alert).
TEST(TextToImageTest, ModulesReturningTheWrongShapeLaterAreTheModelsFault) {
  ScratchDir dir;
  const std::string model = WriteTextModel(dir.path(), LatentConfig());
  // Right for the empty prompt (the probe: <|startoftext|> then padding),
  // one column short for any other.
  WriteEncoder(model + "/" + TextEncoder::kModelFile, R"(
def forward(self, ids: Tensor) -> Tensor:
    out = self.table.index_select(0, ids.flatten()).view(ids.size(0), ids.size(1), 4)
    if bool((ids[:, 1] == 1898).all()):
        return out
    return out[:, :, :3]
)");
  // Right for the zero latent (the probe), wrong otherwise.
  WriteDecoder(model + "/" + LatentDecoder::kModelFile, R"(
def forward(self, z: Tensor) -> Tensor:
    up = self.scale * z.repeat_interleave(2, 2).repeat_interleave(2, 3)
    if bool((z == 0).all()):
        return up
    return up[:, :, :3]
)");
  auto checkpoint = LoadModel(model);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  auto encoded = (*checkpoint)->text_encoder()->Encode({"a photo"});
  EXPECT_EQ(encoded.status().code(), absl::StatusCode::kFailedPrecondition) << encoded.status();
  EXPECT_NE(encoded.status().message().find("text_encoder.pt: forward returned shape [1, 8, 3]"),
            std::string::npos)
      << encoded.status();
  auto decoded = (*checkpoint)->latent_decoder()->Decode(at::ones({1, 1, 2, 2}));
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kFailedPrecondition) << decoded.status();
  EXPECT_NE(decoded.status().message().find("vae_decoder.pt: forward returned shape [1, 1, 3, 4]"),
            std::string::npos)
      << decoded.status();
}

TEST(TextToImageTest, BadLatentConfigurationsNameTheFieldOrFile) {
  struct Case {
    std::string what;
    std::function<void(v1::ModelConfig*)> edit_config;
    bool write_decoder;
    std::string decoder_source;
    absl::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"no decoder",
       {},
       false,
       "",
       absl::StatusCode::kNotFound,
       "vae_decoder.pt: file does not exist"},
      {"decoder without config", [](v1::ModelConfig* c) { c->clear_latent(); }, true, "",
       absl::StatusCode::kInvalidArgument,
       "the directory has vae_decoder.pt but `latent` is not set"},
      {"zero scaling", [](v1::ModelConfig* c) { c->mutable_latent()->set_scaling_factor(0); }, true,
       "", absl::StatusCode::kInvalidArgument, "latent.scaling_factor: must be finite and > 0"},
      {"no image shape", [](v1::ModelConfig* c) { c->mutable_latent()->clear_image_shape(); }, true,
       "", absl::StatusCode::kInvalidArgument, "latent.image_shape: is required"},
      {"image shape differs",
       [](v1::ModelConfig* c) { c->mutable_latent()->set_image_shape(1, 3); }, true, "",
       absl::StatusCode::kInvalidArgument,
       "vae_decoder.pt: probe with a zero latent [1, 1, 2, 2] failed: forward returned shape "
       "[1, 1, 4, 4], expected [1, 1, 3, 4]"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    ScratchDir dir;
    v1::ModelConfig config = LatentConfig();
    if (c.edit_config) c.edit_config(&config);
    const std::string model = WriteTextModel(dir.path(), config);
    if (c.write_decoder) WriteDecoder(model + "/vae_decoder.pt", c.decoder_source);
    auto checkpoint = LoadModel(model);
    ASSERT_FALSE(checkpoint.ok());
    EXPECT_EQ(checkpoint.status().code(), c.code) << checkpoint.status();
    EXPECT_NE(checkpoint.status().message().find(c.message), std::string::npos)
        << checkpoint.status();
  }
}

// A reference set of images: truth decodes each sample and compares images
// (clamped to the reference's value range, as saved images are).
TEST(TextToImageTest, TruthAgainstImagesDecodesTheSamples) {
  ScratchDir dir;
  const std::string model = WriteTextModel(dir.path(), LatentConfig());
  WriteDecoder(model + "/" + LatentDecoder::kModelFile);
  auto checkpoint = LoadModel(model);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  Denoiser denoiser(*checkpoint);
  at::manual_seed(5);
  auto reference = ReferenceSet::FromTensor(at::randn({50, 1, 4, 4}));
  ASSERT_TRUE(reference.ok());
  auto condition = (*checkpoint)->text_encoder()->Encode({"a seven", "a seven", "a seven"});
  ASSERT_TRUE(condition.ok());
  SampleCurvatureOptions options;
  options.sampler.num_steps = 5;
  options.keep_points = false;
  auto measured = MeasureSamples(denoiser, {1, 2, 3}, *condition, options, &*reference);
  ASSERT_TRUE(measured.ok()) << measured.status();
  for (const SampleCurvature& sample : *measured) {
    ASSERT_TRUE(sample.truth.has_value());
    auto image = (*checkpoint)->latent_decoder()->Decode(sample.sample.unsqueeze(0));
    ASSERT_TRUE(image.ok());
    const at::Tensor shown = image->clamp(reference->min_value(), reference->max_value());
    ASSERT_FALSE(at::equal(shown, *image));  // the clamp is exercised
    const at::Tensor distances = (reference->items().flatten(1) - shown.flatten(1)).norm(2, 1);
    EXPECT_EQ(sample.truth->index, distances.argmin().item<int64_t>());
    EXPECT_NEAR(sample.truth->d1, distances.min().item<double>(), 1e-4);
  }
}

}  // namespace
}  // namespace memaudit
