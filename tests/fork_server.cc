#include "tests/fork_server.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "tests/fork_server_protocol.h"

namespace memaudit::testing {
namespace {

// The largest request accepted (arguments and environment), against a
// stray connection announcing gigabytes.
constexpr uint32_t kMaxRequestBytes = 16u << 20;

struct Request {
  std::string working_directory;
  std::vector<std::string> arguments;
  std::vector<std::string> environment;
  int streams[3] = {-1, -1, -1};  // the launcher's stdin, stdout, stderr
};

// Reads one request: the size with the three descriptors, then the payload.
bool ReceiveRequest(int connection, Request* request) {
  uint32_t size = 0;
  if (!ReceiveSizeAndStreams(connection, &size, request->streams) || size > kMaxRequestBytes) {
    return false;
  }
  std::string payload(size, '\0');
  if (!ReadFully(connection, payload.data(), payload.size())) return false;
  std::vector<std::string> fields;
  for (size_t start = 0; start < payload.size();) {
    const size_t end = payload.find('\0', start);
    if (end == std::string::npos) return false;
    fields.push_back(payload.substr(start, end - start));
    start = end + 1;
  }
  if (fields.size() < 2) return false;
  request->working_directory = fields[0];
  const size_t count = std::strtoul(fields[1].c_str(), nullptr, 10);
  if (count == 0 || fields.size() < 2 + count) return false;
  request->arguments.assign(fields.begin() + 2, fields.begin() + 2 + count);
  request->environment.assign(fields.begin() + 2 + count, fields.end());
  return true;
}

// In the forked test process: the launcher's streams, directory and
// environment, then the tests. Returns their exit status.
int RunRequest(Request& request, int (*run_tests)(int, char**)) {
  for (int stream = 0; stream < 3; ++stream) {
    if (dup2(request.streams[stream], stream) < 0) return 127;
  }
  for (int fd : request.streams) {
    if (fd > 2) close(fd);
  }
  if (chdir(request.working_directory.c_str()) != 0) {
    std::fprintf(stderr, "fork server: cannot enter %s: %s\n", request.working_directory.c_str(),
                 std::strerror(errno));
    return 127;
  }
  clearenv();
  for (std::string& variable : request.environment) putenv(variable.data());
  std::vector<char*> argv;
  for (std::string& argument : request.arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);
  return run_tests(static_cast<int>(request.arguments.size()), argv.data());
}

// A descriptor that polls readable when `pid` ends (pidfd_open, Linux 5.3),
// or -1 where the kernel refuses it.
int OpenProcessDescriptor(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
#else
  return -1;
#endif
}

// One request, in a process of its own (the server's child): forks the
// test, says so, and reports how it ended, or kills its process group if
// the launcher goes away first. Returns this process's exit status.
int ManageOneTest(int connection, int (*run_tests)(int, char**)) {
  signal(SIGCHLD, SIG_DFL);
  Request request;
  if (!ReceiveRequest(connection, &request)) return 1;
  const pid_t test = fork();
  if (test < 0) return 1;  // the launcher sees no 'S' and runs the test itself
  if (test == 0) {
    setpgid(0, 0);  // its own group, so that a timeout reaches what it starts
    close(connection);
    const int status = RunRequest(request, run_tests);
#if defined(__SANITIZE_ADDRESS__)
    std::exit(status);  // LeakSanitizer checks at exit
#else
    // No static destructors: LibTorch's would deregister its operators
    // one by one, 0.3 s of CPU per process (perf), and the process ends
    // here anyway. The tests' output is flushed first.
    std::fflush(nullptr);
    std::cout.flush();
    std::cerr.flush();
    _exit(status);
#endif
  }
  setpgid(test, test);
  for (int fd : request.streams) close(fd);
  const char started = 'S';
  if (!WriteFully(connection, &started, 1)) {
    kill(-test, SIGKILL);
    waitpid(test, nullptr, 0);
    return 0;
  }
  const int exited = OpenProcessDescriptor(test);
  for (;;) {
    int status = 0;
    const pid_t done = waitpid(test, &status, WNOHANG);
    if (done == test) {
      const int32_t reported = status;
      WriteFully(connection, &reported, sizeof(reported));
      return 0;
    }
    pollfd watched[2] = {{connection, POLLIN, 0}, {exited, POLLIN, 0}};
    // Without a process descriptor, check the test every 5 ms.
    const int ready = poll(watched, exited >= 0 ? 2 : 1, exited >= 0 ? -1 : 5);
    if (ready > 0 && watched[0].revents != 0) {
      // The launcher only reads, so anything here is its end: killed by
      // CTest (a timeout) or by hand.
      kill(-test, SIGKILL);
      waitpid(test, nullptr, 0);
      return 0;
    }
  }
}

int ServeForkRequests(const std::string& name, int (*run_tests)(int, char**)) {
  const int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return 1;
  sockaddr_un address;
  const socklen_t length = ForkServerAddress(name, &address);
  if (bind(listener, reinterpret_cast<const sockaddr*>(&address), length) != 0) {
    return errno == EADDRINUSE ? 0 : 1;  // another server holds the name
  }
  if (listen(listener, 64) != 0) return 1;
  signal(SIGCHLD, SIG_IGN);  // the managers are reaped by the kernel
  for (;;) {
    pollfd pending{listener, POLLIN, 0};
    const int ready = poll(&pending, 1, kForkServerIdleSeconds * 1000);
    if (ready == 0) return 0;
    if (ready < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    const int connection = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (connection < 0) continue;
    if (!PeerIsSameUser(connection)) {
      close(connection);
      continue;
    }
    const pid_t manager = fork();
    if (manager == 0) {
      close(listener);
      _exit(ManageOneTest(connection, run_tests));
    }
    close(connection);
  }
}

}  // namespace

int RunTestsOrServeForks(int argc, char** argv, int (*run_tests)(int, char**)) {
  const size_t flag_length = std::strlen(kForkServerFlag);
  if (argc == 2 && std::strncmp(argv[1], kForkServerFlag, flag_length) == 0) {
    return ServeForkRequests(argv[1] + flag_length, run_tests);
  }
  return run_tests(argc, argv);
}

}  // namespace memaudit::testing
