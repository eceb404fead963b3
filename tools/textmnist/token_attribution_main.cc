// memaudit-token-attribution: the token-attribution measurement on the
// committed text-conditioned model (docs/VERDICTS.md "Token attribution").
// checkpoints/textmnist's memorized prompts are a generic caption plus a
// made-up title ("..., the fenwick print") whose image the training data
// repeats 100 times. For every prompt of prompts/eval.jsonl this prints the
// memorized prompts' tokens with their attribution
// (core/early/token_attribution.h) at the low-noise timestep (what the
// server computes for a full audit) and at the first timestep (Wen et al.),
// and whether the highest-attributed token is a word of the title (the rule
// of issue #29) or the made-up word itself.
//
//   memaudit-token-attribution [MODEL_DIR] [FIRST_SEED] [SAMPLES]
//   (defaults: checkpoints/textmnist 8000 4)
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/checkpoint/load_model.h"
#include "core/checkpoint/text_encoder.h"
#include "core/early/token_attribution.h"
#include "core/model/denoiser.h"

namespace memaudit {
namespace {

int Run(const std::string& model, uint64_t first_seed, int samples, AttributionTimestep which) {
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
  int prompts = 0, hits = 0, made_up_hits = 0;
  int64_t timestep = -1;
  for (const nlohmann::json& entry : memorized) {
    const std::string prompt = entry.at("prompt").get<std::string>();
    absl::string_view title = prompt;
    if (!absl::ConsumePrefix(&title, entry.at("generic_prompt").get<std::string>() + ", ")) {
      std::cerr << "no title in \"" << prompt << "\"\n";
      return 1;
    }
    const std::vector<std::string> words = absl::StrSplit(title, ' ');
    auto encoding = encoder.EncodeDifferentiably(prompt);
    if (!encoding.ok()) {
      std::cerr << encoding.status() << "\n";
      return 1;
    }
    auto attribution = ComputeTokenAttribution(
        denoiser, seeds, {encoding->embedding, encoding->table, encoding->text_ids},
        SamplerOptions(), {}, which);
    if (!attribution.ok()) {
      std::cerr << attribution.status() << "\n";
      return 1;
    }
    timestep = attribution->timestep;
    const size_t best = static_cast<size_t>(
        std::max_element(attribution->scores.begin(), attribution->scores.end()) -
        attribution->scores.begin());
    const std::string strongest(absl::StripAsciiWhitespace(encoding->text_tokens[best]));
    const bool hit = std::find(words.begin(), words.end(), strongest) != words.end();
    ++prompts;
    hits += hit;
    made_up_hits += words.size() == 3 && strongest == words[1];
    std::printf("%-4s strongest %-12s |", hit ? "HIT" : "miss", strongest.c_str());
    for (size_t i = 0; i < encoding->text_tokens.size(); ++i) {
      std::printf(" [%s]%.3f", encoding->text_tokens[i].c_str(), attribution->scores[i]);
    }
    std::printf("\n");
  }
  std::printf(
      "%s: title word strongest in %d/%d memorized prompts, the made-up word in %d/%d "
      "(seeds %llu-%llu, t = %lld)\n",
      which == AttributionTimestep::kLowNoise ? "low-noise timestep" : "first timestep", hits,
      prompts, made_up_hits, prompts, static_cast<unsigned long long>(first_seed),
      static_cast<unsigned long long>(first_seed + samples - 1), static_cast<long long>(timestep));
  return 0;
}

}  // namespace
}  // namespace memaudit

int main(int argc, char** argv) {
  const std::string model = argc > 1 ? argv[1] : "checkpoints/textmnist";
  const uint64_t first_seed = argc > 2 ? std::stoull(argv[2]) : 8000;
  const int samples = argc > 3 ? std::stoi(argv[3]) : 4;
  for (auto which :
       {memaudit::AttributionTimestep::kLowNoise, memaudit::AttributionTimestep::kFirst}) {
    if (const int status = memaudit::Run(model, first_seed, samples, which); status != 0) {
      return status;
    }
  }
  return 0;
}
