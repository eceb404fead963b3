// "[d0, d1, ...]" of a shape, for error messages.
#ifndef MEMAUDIT_CORE_BASE_SHAPE_STRING_H_
#define MEMAUDIT_CORE_BASE_SHAPE_STRING_H_

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace memaudit {

// `shape` is anything absl::StrJoin joins: at::IntArrayRef (sizes()),
// std::vector<int64_t>, a protobuf repeated field.
template <typename Shape>
std::string ShapeString(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace memaudit

#endif  // MEMAUDIT_CORE_BASE_SHAPE_STRING_H_
