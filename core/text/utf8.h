// UTF-8 checks for text that comes from outside: prompts, and messages that
// quote files (a LibTorch error can quote bytes of a crafted archive) before
// they go into a protobuf string field, which must be UTF-8 (a client that
// parses the message fails on the whole response otherwise). Stateless;
// thread-safe.
#ifndef MEMAUDIT_CORE_TEXT_UTF8_H_
#define MEMAUDIT_CORE_TEXT_UTF8_H_

#include <string>
#include <string_view>

namespace memaudit {

// Whether `text` is well-formed UTF-8 (no overlongs, surrogates or code
// points above U+10FFFF).
bool IsValidUtf8(std::string_view text);

// `text` with every ill-formed sequence replaced by U+FFFD, the
// well-formed rest unchanged (so `text` itself when it is valid).
std::string ReplaceInvalidUtf8(std::string_view text);

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_TEXT_UTF8_H_
