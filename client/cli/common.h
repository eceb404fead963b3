// What the CLI's subcommands share: error and JSON output, Ctrl-C
// handling, the sampling and curvature flags, and the progress bar.
#ifndef MEMAUDIT_CLIENT_CLI_COMMON_H_
#define MEMAUDIT_CLIENT_CLI_COMMON_H_

#include <CLI/CLI.hpp>
#include <cstdint>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/cli_options.h"
#include "memaudit/v1/audit_service.pb.h"

namespace memaudit::client::cli {

// Prints `status` as one line on stderr ("memaudit: CODE: message") and
// returns the exit code: 130 for a cancellation caused by Ctrl-C (see
// CatchInterrupts), 1 otherwise.
int Fail(const absl::Status& status);

// Prints `json` indented by 2, with a final newline.
void PrintJson(const nlohmann::json& json);

// Prints `to_json(result)` (PrintJson) with --json, `to_text(result)`
// otherwise.
template <typename Result, typename ToJson, typename ToText>
void PrintResult(bool json, const Result& result, ToJson to_json, ToText to_text) {
  if (json) {
    PrintJson(to_json(result));
  } else {
    std::cout << to_text(result);
  }
}

// From now on SIGINT sets Interrupted() instead of ending the process, so
// that a streaming command can cancel its call (and its job) and exit 130.
// Commands that make only unary calls keep the default action.
void CatchInterrupts();
bool Interrupted();

// Checks for numeric flags: the value must be a number above 0
// (PositiveNumber) or at least 0 (NonNegativeNumber). CLI11's validators of
// those names print their upper bound as DBL_MAX in 300 digits; these say
// "--count: must be positive, got 0".
CLI::Validator PositiveNumber();
CLI::Validator NonNegativeNumber();

// A flag counting samples or seeds (--samples, --count): positive, its
// default shown in help.
template <typename Int>
CLI::Option* AddCountOption(CLI::App* command, const std::string& name, Int& count,
                            const std::string& description) {
  return command->add_option(name, count, description)
      ->capture_default_str()
      ->check(PositiveNumber());
}

// --seed: not negative (a wrapped -1 would be 2^64 - 1), its default shown.
template <typename Int>
CLI::Option* AddSeedOption(CLI::App* command, Int& seed, const std::string& description) {
  return command->add_option("--seed", seed, description)
      ->capture_default_str()
      ->check(NonNegativeNumber());
}

// Adds the string flag `name` that takes only the words of `table` (help
// lists them and shows the default). The action turns `word` into the enum
// with ParseWord.
template <typename Enum>
CLI::Option* AddWordOption(CLI::App* command, const std::string& name, std::string& word,
                           std::span<const EnumWord<Enum>> table, const std::string& description) {
  return command->add_option(name, word, description)
      ->capture_default_str()
      ->check(CLI::IsMember(Words(table)));
}

// --model and the sampling flags of sample, spectrum, audit, calibrate and
// early.
struct SamplingFlags {
  std::string model;
  int64_t steps = 0;
  std::optional<double> guidance;
  std::string sampler = "ddim";
  double eta = 0;
  int64_t steps_offset = 0;

  void Add(CLI::App* command);
  absl::Status Fill(v1::SamplingOptions* options) const;
};

// The curvature flags of spectrum and audit; each adds the ones it has.
struct CurvatureFlags {
  std::string score_kind = "conditional";
  bool symmetrize = false;
  std::string method = "auto";
  int64_t eigenvalues = 0;
  std::string target = "largest_real";

  void AddScoreKind(CLI::App* command, const std::string& description);
  void AddMethod(CLI::App* command);  // --method and -k,--eigenvalues
  void AddTarget(CLI::App* command);
  absl::Status Fill(v1::CurvatureOptions* options) const;
};

// The condition of class `label`.
v1::Condition ClassCondition(int64_t label);

// The condition flags of audit: --class (repeatable), --prompt
// (repeatable) and --prompts FILE, in that order in the request.
struct ConditionListFlags {
  std::vector<int64_t> classes;
  std::vector<std::string> prompts;
  std::string prompts_file;

  void Add(CLI::App* command);
  absl::StatusOr<std::vector<v1::Condition>> Conditions() const;
};

// The one condition of sample, spectrum and early: --class or --prompt.
struct ConditionFlags {
  std::optional<int64_t> class_label;
  std::optional<std::string> prompt;

  void Add(CLI::App* command, const std::string& class_description);
  // Sets `condition` when a flag was given; leaves it empty otherwise.
  void Fill(v1::Condition* condition) const;
};

// A one-line progress bar on stderr, redrawn in place. It draws only on a
// terminal and when not quiet, so that logs and pipes stay clean.
class ProgressBar {
 public:
  explicit ProgressBar(bool quiet);
  ~ProgressBar() { Done(); }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // Whether Draw draws.
  bool drawing() const { return tty_; }
  // "[#####.....] done/total samples" followed by `note`.
  void Draw(int64_t done, int64_t total, const std::string& note = "");
  // Ends the line if anything was drawn.
  void Done();

 private:
  const bool tty_;
  bool drawn_ = false;
};

}  // namespace memaudit::client::cli

#endif  // MEMAUDIT_CLIENT_CLI_COMMON_H_
