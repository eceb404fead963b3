// The CLI's words for enum values: what enum-valued flags accept
// (--sampler ddim) and what its JSON prints ("method": "dense"). One table
// per enum, so that a flag's accepted words, its check, its parsing and its
// printing cannot drift apart.
#ifndef MEMAUDIT_CLIENT_CLI_OPTIONS_H_
#define MEMAUDIT_CLIENT_CLI_OPTIONS_H_

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "memaudit/v1/audit_service.pb.h"

namespace memaudit::client {

template <typename Enum>
struct EnumWord {
  std::string_view word;
  Enum value;
};

// --fail-on: the verdict at which an audit fails a release gate (exit 3).
enum class FailOn { kMemorized, kPartial, kNever };

// The tables, in the order help texts list them. Each word and each value
// appears once.
std::span<const EnumWord<v1::Sampler>> SamplerWords();          // ddim ddpm
std::span<const EnumWord<v1::ScoreKind>> ScoreKindWords();      // conditional unconditional
                                                                // guided difference
std::span<const EnumWord<v1::SpectrumMethod>> MethodWords();    // auto dense arnoldi
std::span<const EnumWord<v1::EigenTarget>> EigenTargetWords();  // largest_real
                                                                // largest_magnitude
                                                                // smallest_real
std::span<const EnumWord<FailOn>> FailOnWords();                // memorized partial never

// Whether `verdict` reaches `fail_on`: MEMORIZED reaches memorized and
// partial, PARTIAL reaches partial, nothing reaches never.
bool ReachesFailOn(v1::Verdict verdict, FailOn fail_on);

// The words of `table`, in order (for CLI::IsMember).
template <typename Enum>
std::vector<std::string> Words(std::span<const EnumWord<Enum>> table) {
  std::vector<std::string> words;
  for (const EnumWord<Enum>& entry : table) words.emplace_back(entry.word);
  return words;
}

// The value of `word`; INVALID_ARGUMENT naming `flag` and the words it
// takes when `word` is not in `table`.
template <typename Enum>
absl::StatusOr<Enum> ParseWord(std::span<const EnumWord<Enum>> table, const std::string& word,
                               const std::string& flag) {
  for (const EnumWord<Enum>& entry : table) {
    if (entry.word == word) return entry.value;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(flag, " \"", word, "\" is not one of ", absl::StrJoin(Words(table), ", ")));
}

// The word of `value`; nullopt when `table` has none (e.g. a value from a
// newer server).
template <typename Enum>
std::optional<std::string_view> WordOf(std::span<const EnumWord<Enum>> table, Enum value) {
  for (const EnumWord<Enum>& entry : table) {
    if (entry.value == value) return entry.word;
  }
  return std::nullopt;
}

}  // namespace memaudit::client

#endif  // MEMAUDIT_CLIENT_CLI_OPTIONS_H_
