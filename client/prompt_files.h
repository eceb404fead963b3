// Prompt lists for the CLI's --prompts, --memorized-prompts and
// --not-memorized-prompts (docs/TEXT_TO_IMAGE.md §3).
#ifndef MEMAUDIT_CLIENT_PROMPT_FILES_H_
#define MEMAUDIT_CLIENT_PROMPT_FILES_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "memaudit/v1/audit_service.pb.h"

namespace memaudit::client {

// The condition of one prompt; `name` (may be empty) becomes Condition.name,
// the label reports show.
v1::Condition PromptCondition(const std::string& prompt, const std::string& name = "");

// Reads the prompts of `path`, in file order. Two formats, told apart by the
// first line that is not blank:
//   - plain text: one prompt per line, taken as it is (a trailing "\r" is
//     dropped); blank lines are skipped;
//   - JSON Lines, when that line starts with "{": one object per non-blank
//     line with a string "prompt" and an optional "id" (a string or an
//     integer) that names the condition; other keys are ignored.
// NOT_FOUND when the file cannot be read; INVALID_ARGUMENT naming
// "path:line" for a line that is not an object with a string prompt, an id
// of another type, text that is not UTF-8, or a file with no prompt.
absl::StatusOr<std::vector<v1::Condition>> ReadPromptFile(const std::string& path);

}  // namespace memaudit::client

#endif  // MEMAUDIT_CLIENT_PROMPT_FILES_H_
