// main() of the test binaries that run LibTorch in-process: the process
// settings the server's main applies (the host allocator; LibTorch's
// threads stay at its default of 1 so that `ctest -j` runs tests side by
// side), then every test.
#include <gtest/gtest.h>

#include "core/runtime/host_allocator.h"

int main(int argc, char** argv) {
  memaudit::ConfigureHostAllocator();
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
