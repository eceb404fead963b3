// Early-return helpers for absl::Status / absl::StatusOr (Abseil 20220623
// ships no macros of its own).
#ifndef MEMAUDIT_CORE_BASE_STATUS_MACROS_H_
#define MEMAUDIT_CORE_BASE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MEMAUDIT_CONCAT_INNER_(a, b) a##b
#define MEMAUDIT_CONCAT_(a, b) MEMAUDIT_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                            \
  do {                                                   \
    ::absl::Status _memaudit_status = (expr);            \
    if (!_memaudit_status.ok()) return _memaudit_status; \
  } while (0)

// `lhs = value of expr` (an absl::StatusOr<T>), or return its error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(MEMAUDIT_CONCAT_(_memaudit_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

#endif  // MEMAUDIT_CORE_BASE_STATUS_MACROS_H_
