// A fork server for the test binaries that link LibTorch.
//
// Debian 12's libtorch_cpu.so pulls in 287 shared libraries (OpenCV, Qt,
// GDAL, FFmpeg, ...) and registers its operators in static initializers: a
// process that links it spends about 0.65 s of CPU before main (perf: symbol
// lookups across the 287 libraries, page faults, operator registration).
// CTest runs every test in a process of its own, so the ~300 LibTorch tests
// paid that start once each. With the fork server, the start is paid once
// per binary: the first test of a binary starts a copy of it that stops
// after its static initializers and waits on a socket; each test is then a
// fork of that copy, made when its launcher (fork_server_launcher.cc, what
// CTest runs) asks, with the launcher's arguments, working directory,
// environment and standard streams. Each test still runs alone in a fresh
// process, in the state every process of that binary starts in.
//
// The protocol (one Unix stream connection per test, abstract address
// "\0" + name, peers of another uid refused):
//   launcher → server: uint32 payload size, with the launcher's fds 0, 1, 2
//                      (SCM_RIGHTS); then the payload: NUL-terminated
//                      strings: the working directory, the argument count,
//                      the arguments, then the environment ("K=V") to the end.
//   server → launcher: 'S' once the test process is forked, then, when it
//                      ends, its wait status (int32, as waitpid gives it).
// When the connection closes before the test ends (CTest killed the
// launcher on a timeout), the test's process group is killed.
//
// Thread-safety: ServeForkRequests is called from main before any thread
// starts; the server forks, so it must not run threads of its own.
#ifndef MEMAUDIT_TESTS_FORK_SERVER_H_
#define MEMAUDIT_TESTS_FORK_SERVER_H_

namespace memaudit::testing {

// The argument that makes a test binary a fork server, followed by the
// abstract socket name: `core_test --memaudit_fork_server=NAME`.
inline constexpr char kForkServerFlag[] = "--memaudit_fork_server=";

// A fork server stops after this many seconds without a request.
inline constexpr int kForkServerIdleSeconds = 30;

// What main calls: when argv[1] is kForkServerFlag + NAME, serves test
// requests on NAME until idle (the return value is the server's exit
// status, 0 also when another server already holds NAME); otherwise returns
// run_tests(argc, argv). In a served request run_tests runs in the forked
// test process, with that request's arguments.
int RunTestsOrServeForks(int argc, char** argv, int (*run_tests)(int, char**));

}  // namespace memaudit::testing

#endif  // MEMAUDIT_TESTS_FORK_SERVER_H_
