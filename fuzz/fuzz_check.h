// Invariant checks for the libFuzzer harnesses: a failed check prints what
// was violated and aborts, which libFuzzer reports as a crash with the input.
// With FUZZ_VERBOSE set in the environment, FUZZ_LOG_STATUS prints the
// status of the function under test (to see what the seeds reach).
#ifndef MEMAUDIT_FUZZ_FUZZ_CHECK_H_
#define MEMAUDIT_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#include "google/protobuf/stubs/logging.h"

#define FUZZ_CHECK(condition, ...)                                                            \
  do {                                                                                        \
    if (!(condition)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed: ", __FILE__, __LINE__, #condition); \
      std::fprintf(stderr, __VA_ARGS__);                                                      \
      std::fprintf(stderr, "\n");                                                             \
      std::abort();                                                                           \
    }                                                                                         \
  } while (0)

#define FUZZ_LOG_STATUS(status)                                                     \
  do {                                                                              \
    static const bool verbose = std::getenv("FUZZ_VERBOSE") != nullptr;             \
    if (verbose) std::fprintf(stderr, "status: %s\n", (status).ToString().c_str()); \
  } while (0)

// Drops protobuf's log lines (e.g. every string field with invalid UTF-8),
// which would flood the fuzzer's output.
inline void QuietProtobufLogs() { google::protobuf::SetLogHandler(nullptr); }

#endif  // MEMAUDIT_FUZZ_FUZZ_CHECK_H_
