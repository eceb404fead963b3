#include "client/cli_options.h"

namespace memaudit::client {
namespace {

constexpr EnumWord<v1::Sampler> kSamplers[] = {{"ddim", v1::DDIM}, {"ddpm", v1::DDPM}};

constexpr EnumWord<v1::ScoreKind> kScoreKinds[] = {{"conditional", v1::CONDITIONAL},
                                                   {"unconditional", v1::UNCONDITIONAL},
                                                   {"guided", v1::GUIDED},
                                                   {"difference", v1::DIFFERENCE}};

// "auto" is only asked for: a response names the method AUTO resolved to.
constexpr EnumWord<v1::SpectrumMethod> kMethods[] = {
    {"auto", v1::SPECTRUM_METHOD_AUTO}, {"dense", v1::DENSE}, {"arnoldi", v1::ARNOLDI}};

constexpr EnumWord<v1::EigenTarget> kEigenTargets[] = {{"largest_real", v1::LARGEST_REAL},
                                                       {"largest_magnitude", v1::LARGEST_MAGNITUDE},
                                                       {"smallest_real", v1::SMALLEST_REAL}};

constexpr EnumWord<FailOn> kFailOn[] = {
    {"memorized", FailOn::kMemorized}, {"partial", FailOn::kPartial}, {"never", FailOn::kNever}};

}  // namespace

std::span<const EnumWord<v1::Sampler>> SamplerWords() { return kSamplers; }
std::span<const EnumWord<v1::ScoreKind>> ScoreKindWords() { return kScoreKinds; }
std::span<const EnumWord<v1::SpectrumMethod>> MethodWords() { return kMethods; }
std::span<const EnumWord<v1::EigenTarget>> EigenTargetWords() { return kEigenTargets; }
std::span<const EnumWord<FailOn>> FailOnWords() { return kFailOn; }

bool ReachesFailOn(v1::Verdict verdict, FailOn fail_on) {
  switch (fail_on) {
    case FailOn::kMemorized:
      return verdict == v1::MEMORIZED;
    case FailOn::kPartial:
      return verdict == v1::MEMORIZED || verdict == v1::PARTIAL;
    case FailOn::kNever:
      return false;
  }
  return false;
}

}  // namespace memaudit::client
