// The test fork server (fork_server.h) and its launcher, on this binary
// itself (no LibTorch): this binary's main serves forks like the LibTorch
// test binaries' do, and, where MEMAUDIT_FORK_SERVER_TEST_CHILD is set, is
// the "test" a request runs instead of the gtest suite:
//   report  prints its directory, arguments, one variable, and its parent's
//           command line, then exits 7;
//   abort   ends with SIGABRT;
//   sleep   writes its pid to $PID_FILE and sleeps for a minute.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "tests/fork_server.h"

namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

int RunChild(const std::string& mode, int argc, char** argv) {
  if (mode == "report") {
    char directory[4096];
    std::printf("directory=%s\n", getcwd(directory, sizeof(directory)));
    for (int i = 1; i < argc; ++i) std::printf("argument=%s\n", argv[i]);
    const char* variable = std::getenv("FORK_SERVER_TEST_VARIABLE");
    std::printf("variable=%s\n", variable == nullptr ? "(unset)" : variable);
    std::string parent = ReadFile("/proc/" + std::to_string(getppid()) + "/cmdline");
    for (char& c : parent) c = c == '\0' ? ' ' : c;
    std::printf("parent=%s\n", parent.c_str());
    std::fprintf(stderr, "on stderr\n");
    return 7;
  }
  if (mode == "abort") std::abort();
  if (mode == "sleep") {
    std::ofstream(std::getenv("PID_FILE")) << getpid() << "\n";
    std::this_thread::sleep_for(std::chrono::seconds(60));
    return 0;
  }
  std::fprintf(stderr, "unknown MEMAUDIT_FORK_SERVER_TEST_CHILD=%s\n", mode.c_str());
  return 2;
}

int RunTests(int argc, char** argv) {
  if (const char* mode = std::getenv("MEMAUDIT_FORK_SERVER_TEST_CHILD"); mode != nullptr) {
    return RunChild(mode, argc, argv);
  }
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

struct LaunchResult {
  int status = -1;  // as system() returns it
  std::string output;
};

// Runs `launcher <this binary> ARGS` in a shell with `environment`
// (VAR=VALUE words) set, stdout and stderr captured.
LaunchResult Launch(const std::string& environment, const std::string& args,
                    const std::string& directory = ".") {
  char output_file[] = "/tmp/fork-server-test-XXXXXX";
  const int fd = mkstemp(output_file);
  close(fd);
  const std::string command = "cd " + directory + " && env " + environment + " " +
                              MEMAUDIT_TEST_LAUNCHER + " " + MEMAUDIT_FORK_SERVER_TEST_BINARY +
                              " " + args + " > " + output_file + " 2>&1";
  LaunchResult run;
  run.status = std::system(command.c_str());
  run.output = ReadFile(output_file);
  unlink(output_file);
  return run;
}

// The request's directory, arguments, environment and streams reach the
// test, which runs as a fork of the server (its parent is the server's
// manager process, whose command line is the server's), and its exit
// status comes back.
TEST(ForkServerTest, ATestRunsForkedWithItsArgumentsDirectoryEnvironmentAndStreams) {
  const LaunchResult run =
      Launch("MEMAUDIT_FORK_SERVER_TEST_CHILD=report FORK_SERVER_TEST_VARIABLE='a b'",
             "--first 'with space'", "/tmp");
  ASSERT_TRUE(WIFEXITED(run.status)) << run.output;
  EXPECT_EQ(WEXITSTATUS(run.status), 7) << run.output;
  EXPECT_NE(run.output.find("directory=/tmp\n"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("argument=--first\nargument=with space\n"), std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("variable=a b\n"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("on stderr\n"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find(std::string("parent=") + MEMAUDIT_FORK_SERVER_TEST_BINARY + " " +
                            memaudit::testing::kForkServerFlag),
            std::string::npos)
      << run.output;
}

// MEMAUDIT_TEST_FORK_SERVER=0: the binary runs itself, the launcher's child.
TEST(ForkServerTest, DisabledTheBinaryIsExecutedDirectly) {
  const LaunchResult run =
      Launch("MEMAUDIT_FORK_SERVER_TEST_CHILD=report MEMAUDIT_TEST_FORK_SERVER=0", "");
  ASSERT_TRUE(WIFEXITED(run.status)) << run.output;
  EXPECT_EQ(WEXITSTATUS(run.status), 7) << run.output;
  EXPECT_NE(run.output.find("variable=(unset)"), std::string::npos) << run.output;
  EXPECT_EQ(run.output.find(memaudit::testing::kForkServerFlag), std::string::npos) << run.output;
}

// A test ended by a signal ends its launcher by the same signal, which is
// what CTest reports (the shell's status 128 + 6).
TEST(ForkServerTest, ATestEndedByASignalEndsTheLauncherByIt) {
  const LaunchResult run = Launch("MEMAUDIT_FORK_SERVER_TEST_CHILD=abort", "");
  ASSERT_TRUE(WIFEXITED(run.status)) << run.output;
  EXPECT_EQ(WEXITSTATUS(run.status), 128 + SIGABRT) << run.output;
}

// CTest ends a test past its timeout by killing the launcher: the forked
// test is killed too.
TEST(ForkServerTest, KillingTheLauncherKillsTheTest) {
  const std::string pid_file = "/tmp/fork-server-test-" + std::to_string(getpid()) + ".pid";
  unlink(pid_file.c_str());
  const pid_t launcher = fork();
  ASSERT_GE(launcher, 0);
  if (launcher == 0) {
    setenv("MEMAUDIT_FORK_SERVER_TEST_CHILD", "sleep", 1);
    setenv("PID_FILE", pid_file.c_str(), 1);
    execl(MEMAUDIT_TEST_LAUNCHER, MEMAUDIT_TEST_LAUNCHER, MEMAUDIT_FORK_SERVER_TEST_BINARY,
          nullptr);
    _exit(127);
  }
  pid_t test = 0;
  for (int i = 0; i < 3000 && test == 0; ++i) {
    std::istringstream(ReadFile(pid_file)) >> test;
    if (test == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GT(test, 0) << "the test never started";
  EXPECT_EQ(kill(test, 0), 0);
  kill(launcher, SIGKILL);
  waitpid(launcher, nullptr, 0);
  bool gone = false;
  for (int i = 0; i < 500 && !gone; ++i) {
    gone = kill(test, 0) != 0;
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(gone) << "pid " << test << " outlived its launcher";
  if (!gone) kill(test, SIGKILL);
  unlink(pid_file.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  return memaudit::testing::RunTestsOrServeForks(argc, argv, RunTests);
}
