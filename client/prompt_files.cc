#include "client/prompt_files.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/common.h"

namespace memaudit::client {
namespace {

bool IsBlank(const std::string& line) { return absl::StripAsciiWhitespace(line).empty(); }

bool IsUtf8(const std::string& text) {
  return google::protobuf::internal::IsStructurallyValidUTF8(text.data(),
                                                             static_cast<int>(text.size()));
}

absl::Status LineError(const std::string& path, int line, const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat(path, ":", line, ": ", problem));
}

// One JSON Lines record: {"prompt": "...", "id": "..." or 7}.
absl::StatusOr<v1::Condition> ParseRecord(const std::string& text, const std::string& path,
                                          int line) {
  const nlohmann::json record = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (record.is_discarded() || !record.is_object()) {
    return LineError(path, line, "not a JSON object (JSON Lines: {\"id\": ..., \"prompt\": ...})");
  }
  const auto prompt = record.find("prompt");
  if (prompt == record.end() || !prompt->is_string()) {
    return LineError(path, line, "needs a string \"prompt\"");
  }
  std::string name;
  if (const auto id = record.find("id"); id != record.end()) {
    if (id->is_string()) {
      name = id->get<std::string>();
    } else if (id->is_number_integer()) {
      name = std::to_string(id->get<int64_t>());
    } else {
      return LineError(path, line, "\"id\" must be a string or an integer");
    }
  }
  return PromptCondition(prompt->get<std::string>(), name);
}

}  // namespace

v1::Condition PromptCondition(const std::string& prompt, const std::string& name) {
  v1::Condition condition;
  condition.set_prompt(prompt);
  if (!name.empty()) condition.set_name(name);
  return condition;
}

absl::StatusOr<std::vector<v1::Condition>> ReadPromptFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read the prompt file"));
  std::vector<v1::Condition> conditions;
  std::optional<bool> json_lines;
  std::string text;
  for (int line = 1; std::getline(in, text); ++line) {
    if (!text.empty() && text.back() == '\r') text.pop_back();
    if (IsBlank(text)) continue;
    if (!IsUtf8(text)) return LineError(path, line, "not valid UTF-8");
    if (!json_lines.has_value()) json_lines = absl::StartsWith(text, "{");
    if (*json_lines) {
      absl::StatusOr<v1::Condition> condition = ParseRecord(text, path, line);
      if (!condition.ok()) return condition.status();
      conditions.push_back(*std::move(condition));
    } else {
      conditions.push_back(PromptCondition(text));
    }
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  if (conditions.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": holds no prompt"));
  }
  return conditions;
}

}  // namespace memaudit::client
