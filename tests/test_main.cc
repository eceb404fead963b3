// main() of the test binaries that link LibTorch: the process settings the
// server's main applies (the host allocator; LibTorch's threads stay at its
// default of 1 so that `ctest -j` runs tests side by side), then every
// test, in this process or, under CTest, in a fork of the binary's fork
// server (fork_server.h).
#include <gtest/gtest.h>

#include "core/runtime/host_allocator.h"
#include "tests/fork_server.h"

namespace {

int RunAllTests(int argc, char** argv) {
  memaudit::ConfigureHostAllocator();
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

}  // namespace

int main(int argc, char** argv) {
  return memaudit::testing::RunTestsOrServeForks(argc, argv, RunAllTests);
}
