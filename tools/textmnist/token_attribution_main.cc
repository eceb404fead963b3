// memaudit-token-attribution: the token-attribution measurement on a
// text-conditioned model trained by train_text_mnist.py (docs/VERDICTS.md
// "Token attribution"). Its memorized prompts are a generic caption plus a
// made-up title ("..., the fenwick print") whose image the training data
// repeats 100 times. For every memorized prompt of prompts/
// memorized_images.json this prints the tokens with their deletion score
// and gradient (core/early/token_attribution.h) at the low-noise timestep
// (what the server computes for a full audit), and for both measures at
// both the low-noise and the first timestep (Wen et al.) how often the
// highest-scored token is a word of the title (the rule of issue #29) or
// the made-up word itself.
//
//   memaudit-token-attribution [MODEL_DIR] [FIRST_SEED] [SAMPLES]
//   (defaults: checkpoints/textmnist 8000 4)
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/checkpoint/load_model.h"
#include "core/checkpoint/text_encoder.h"
#include "core/early/token_attribution.h"
#include "core/model/denoiser.h"

namespace memaudit {
namespace {

// One measure at one timestep, and how often it named the title.
struct Tally {
  const char* name;
  AttributionTimestep timestep;
  bool deletion;
  int hits = 0, made_up_hits = 0;
  int64_t t = -1;
  double seconds = 0;  // wall time of the measure, encoding included
};

absl::StatusOr<TokenAttribution> Measure(const Denoiser& denoiser, const TextEncoder& encoder,
                                         const std::string& prompt,
                                         const std::vector<uint64_t>& seeds, const Tally& tally) {
  if (tally.deletion) {
    absl::StatusOr<at::Tensor> condition = encoder.Encode({prompt});
    if (!condition.ok()) return condition.status();
    absl::StatusOr<at::Tensor> deletions = encoder.EncodeWithEachTokenDeleted(prompt);
    if (!deletions.ok()) return deletions.status();
    return ComputeTokenDeletions(denoiser, seeds, *condition, *deletions, SamplerOptions(), {},
                                 tally.timestep);
  }
  absl::StatusOr<TextEncoder::DifferentiableEncoding> encoding =
      encoder.EncodeDifferentiably(prompt);
  if (!encoding.ok()) return encoding.status();
  return ComputeTokenGradients(denoiser, seeds,
                               {encoding->embedding, encoding->table, encoding->text_ids},
                               SamplerOptions(), {}, tally.timestep);
}

int Run(const std::string& model, uint64_t first_seed, int samples) {
  auto network = LoadModel(model);
  if (!network.ok()) {
    std::cerr << network.status() << "\n";
    return 1;
  }
  Denoiser denoiser(*network);
  const TextEncoder& encoder = *(*network)->text_encoder();
  std::vector<uint64_t> seeds;
  for (int i = 0; i < samples; ++i) seeds.push_back(first_seed + static_cast<uint64_t>(i));
  std::ifstream titles_file(model + "/prompts/memorized_images.json");
  const nlohmann::json memorized = nlohmann::json::parse(titles_file).at("memorized");
  std::array<Tally, 4> tallies = {
      Tally{"deletion, low-noise t (product)", AttributionTimestep::kLowNoise, true},
      Tally{"gradient, low-noise t", AttributionTimestep::kLowNoise, false},
      Tally{"deletion, first t", AttributionTimestep::kFirst, true},
      Tally{"gradient, first t (Wen)", AttributionTimestep::kFirst, false}};
  // Each memorized prompt's title words; the made-up word is the one no
  // other title has.
  std::vector<std::vector<std::string>> titles;
  std::map<std::string, int> titles_with_word;
  for (const nlohmann::json& entry : memorized) {
    const std::string prompt = entry.at("prompt").get<std::string>();
    absl::string_view title = prompt;
    if (!absl::ConsumePrefix(&title, entry.at("generic_prompt").get<std::string>() + ", ")) {
      std::cerr << "no title in \"" << prompt << "\"\n";
      return 1;
    }
    titles.push_back(absl::StrSplit(title, ' '));
    for (const std::string& word :
         std::set<std::string>(titles.back().begin(), titles.back().end())) {
      ++titles_with_word[word];
    }
  }
  int prompts = 0;
  for (size_t p = 0; p < memorized.size(); ++p) {
    const std::string prompt = memorized[p].at("prompt").get<std::string>();
    const std::vector<std::string>& words = titles[p];
    absl::StatusOr<std::vector<std::string>> tokens = encoder.TextTokens(prompt);
    if (!tokens.ok()) {
      std::cerr << tokens.status() << "\n";
      return 1;
    }
    ++prompts;
    for (Tally& tally : tallies) {
      const auto start = std::chrono::steady_clock::now();
      absl::StatusOr<TokenAttribution> attribution =
          Measure(denoiser, encoder, prompt, seeds, tally);
      tally.seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (!attribution.ok()) {
        std::cerr << attribution.status() << "\n";
        return 1;
      }
      tally.t = attribution->timestep;
      if (attribution->scores.empty()) continue;  // no tokens: no strongest
      const size_t best = static_cast<size_t>(
          std::max_element(attribution->scores.begin(), attribution->scores.end()) -
          attribution->scores.begin());
      const std::string strongest(absl::StripAsciiWhitespace((*tokens)[best]));
      const bool hit = std::find(words.begin(), words.end(), strongest) != words.end();
      tally.hits += hit;
      tally.made_up_hits += hit && titles_with_word[strongest] == 1;
      if (tally.timestep != AttributionTimestep::kLowNoise) continue;
      std::printf("%-8s %-4s strongest %-12s |", tally.deletion ? "deletion" : "gradient",
                  hit ? "HIT" : "miss", strongest.c_str());
      for (size_t i = 0; i < tokens->size(); ++i) {
        std::printf(" [%s]%.3f", (*tokens)[i].c_str(), attribution->scores[i]);
      }
      std::printf("\n");
    }
  }
  std::printf("seeds %llu-%llu: the strongest token is a title word / the made-up word in\n",
              static_cast<unsigned long long>(first_seed),
              static_cast<unsigned long long>(first_seed + samples - 1));
  for (const Tally& tally : tallies) {
    std::printf("  %-34s t = %4lld: %2d/%d, %2d/%d   (%.1f ms per sample)\n", tally.name,
                static_cast<long long>(tally.t), tally.hits, prompts, tally.made_up_hits, prompts,
                1e3 * tally.seconds / (prompts * samples));
  }
  return 0;
}

}  // namespace
}  // namespace memaudit

int main(int argc, char** argv) {
  const std::string model = argc > 1 ? argv[1] : "checkpoints/textmnist";
  const uint64_t first_seed = argc > 2 ? std::stoull(argv[2]) : 8000;
  const int samples = argc > 3 ? std::stoi(argv[3]) : 4;
  return memaudit::Run(model, first_seed, samples);
}
