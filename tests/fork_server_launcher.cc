// memaudit-test-launcher BINARY [ARGS...]: runs one invocation of a test
// binary through that binary's fork server (fork_server.h), starting the
// server if none is up, and exits as the test did (its exit status, or the
// signal that ended it raised again here). CTest runs each LibTorch test
// through it (the binaries' CROSSCOMPILING_EMULATOR, tests/CMakeLists.txt).
//
// The server is keyed by the binary (path, inode, size, modification time)
// and the whole environment, so a rebuilt binary or a test with other
// variables gets a server of its own, started in exactly the environment
// the test asked for. Where no server can be reached or started, or
// MEMAUDIT_TEST_FORK_SERVER=0 is set, the binary is executed directly.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tests/fork_server.h"
#include "tests/fork_server_protocol.h"

extern char** environ;

namespace memaudit::testing {
namespace {

// How long a starting server has to answer (it runs LibTorch's static
// initializers first: ~0.7 s alone, more on a loaded machine).
constexpr auto kServerStartLimit = std::chrono::seconds(30);

[[noreturn]] void ExecuteDirectly(char** argv) {
  execv(argv[0], argv);
  std::fprintf(stderr, "memaudit-test-launcher: cannot execute %s: %s\n", argv[0],
               std::strerror(errno));
  std::_Exit(127);
}

void HashBytes(uint64_t* hash, const void* data, size_t size) {
  const unsigned char* bytes = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) *hash = (*hash ^ bytes[i]) * 0x100000001b3ULL;  // FNV-1a
}

// The server's name: this user, the binary as built, and the environment.
std::string ServerName(const char* binary) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  char resolved[PATH_MAX];
  const char* path = realpath(binary, resolved) != nullptr ? resolved : binary;
  HashBytes(&hash, path, std::strlen(path) + 1);
  struct stat file {};
  if (stat(path, &file) == 0) {
    HashBytes(&hash, &file.st_ino, sizeof(file.st_ino));
    HashBytes(&hash, &file.st_size, sizeof(file.st_size));
    HashBytes(&hash, &file.st_mtim, sizeof(file.st_mtim));
  }
  std::vector<std::string> variables;
  for (char** variable = environ; *variable != nullptr; ++variable) variables.push_back(*variable);
  std::sort(variables.begin(), variables.end());
  for (const std::string& variable : variables) {
    HashBytes(&hash, variable.c_str(), variable.size() + 1);
  }
  char name[96];
  std::snprintf(name, sizeof(name), "memaudit-test-fork-server-%u-%016llx",
                static_cast<unsigned>(getuid()), static_cast<unsigned long long>(hash));
  return name;
}

int Connect(const std::string& name) {
  const int connection = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (connection < 0) return -1;
  sockaddr_un address;
  const socklen_t length = ForkServerAddress(name, &address);
  if (connect(connection, reinterpret_cast<const sockaddr*>(&address), length) != 0) {
    close(connection);
    return -1;
  }
  return connection;
}

// Starts `binary` as the fork server `name`, detached (its own session, no
// descriptor of ours, so that neither CTest nor a build waits for it);
// returns its pid, or -1.
pid_t StartServer(const char* binary, const std::string& name) {
  const pid_t server = fork();
  if (server == 0) {
    setsid();
    const int null = open("/dev/null", O_RDWR);
    for (int stream = 0; stream < 3; ++stream) dup2(null, stream);
    for (int fd = 3; fd < 1024; ++fd) close(fd);
    const std::string flag = std::string(kForkServerFlag) + name;
    char* argv[] = {const_cast<char*>(binary), const_cast<char*>(flag.c_str()), nullptr};
    execv(binary, argv);
    std::_Exit(127);
  }
  return server;
}

// The request of fork_server.h: the size with our streams, then the payload.
bool SendRequest(int connection, int argc, char** argv) {
  std::string payload;
  char directory[PATH_MAX];
  if (getcwd(directory, sizeof(directory)) == nullptr) return false;
  payload.append(directory).push_back('\0');
  payload.append(std::to_string(argc)).push_back('\0');
  for (int i = 0; i < argc; ++i) payload.append(argv[i]).push_back('\0');
  for (char** variable = environ; *variable != nullptr; ++variable) {
    payload.append(*variable).push_back('\0');
  }
  const int streams[3] = {0, 1, 2};
  return SendSizeAndStreams(connection, static_cast<uint32_t>(payload.size()), streams) &&
         WriteFully(connection, payload.data(), payload.size());
}

int Launch(int argc, char** argv) {
  const char* disabled = std::getenv("MEMAUDIT_TEST_FORK_SERVER");
  if (disabled != nullptr && std::strcmp(disabled, "0") == 0) ExecuteDirectly(argv);
  const std::string name = ServerName(argv[0]);
  int connection = Connect(name);
  if (connection < 0) {
    const pid_t server = StartServer(argv[0], name);
    const auto deadline = std::chrono::steady_clock::now() + kServerStartLimit;
    bool server_ended = server < 0;
    while (connection < 0 && !server_ended && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      // A server that ended has lost the race for the name to another one
      // (try that once more) or cannot serve here (no abstract sockets).
      server_ended = waitpid(server, nullptr, WNOHANG) == server;
      connection = Connect(name);
    }
  }
  if (connection < 0) ExecuteDirectly(argv);
  char started = 0;
  if (!SendRequest(connection, argc, argv) || !ReadFully(connection, &started, 1) ||
      started != 'S') {
    close(connection);  // nothing ran: run it here
    ExecuteDirectly(argv);
  }
  int32_t status = 0;
  if (!ReadFully(connection, &status, sizeof(status))) {
    std::fprintf(stderr, "memaudit-test-launcher: the fork server lost the test process of %s\n",
                 argv[0]);
    return 1;
  }
  if (WIFSIGNALED(status)) {
    const int signal_number = WTERMSIG(status);
    signal(signal_number, SIG_DFL);
    raise(signal_number);
    return 128 + signal_number;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

}  // namespace
}  // namespace memaudit::testing

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s TEST_BINARY [ARGS...]\n", argv[0]);
    return 2;
  }
  return memaudit::testing::Launch(argc - 1, argv + 1);
}
