// A real memaudit-server process for end-to-end tests: started on ephemeral
// loopback ports, its log captured, killed when the object goes away.
#ifndef MEMAUDIT_TESTS_SERVER_PROCESS_H_
#define MEMAUDIT_TESTS_SERVER_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

namespace memaudit::testing {

// A shell command's exit code and standard output.
struct CommandResult {
  int exit_code = -1;
  std::string output;
};
CommandResult RunShell(const std::string& command);

class ServerProcess {
 public:
  // Starts `binary` over `repository` with --listen/--metrics_listen on
  // port 0, --threads=2 and `extra_args`; `scratch` receives its port file
  // and log. Waits up to 30 s for the ports (grpc_port() stays 0 when the
  // process exits or never listens: see Log()).
  ServerProcess(const std::string& binary, const std::string& repository,
                const std::string& scratch, const std::vector<std::string>& extra_args = {});
  ~ServerProcess();  // SIGKILL if still running
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Sends `signal_number` (e.g. SIGHUP).
  void Signal(int signal_number) const;
  // SIGTERM, then the exit code (-1 if it did not exit within `seconds`,
  // or was killed by a signal).
  int Terminate(double seconds);
  // The exit code once the process has exited by itself within `seconds`
  // (-1 otherwise).
  int AwaitExit(double seconds);
  std::string Log() const;
  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  std::string target() const { return "127.0.0.1:" + std::to_string(grpc_port_); }

 private:
  std::string port_file_, log_file_;
  pid_t pid_ = -1;
  int exit_code_ = -1;  // once it has exited by itself
  int grpc_port_ = 0, metrics_port_ = 0;
};

}  // namespace memaudit::testing

#endif  // MEMAUDIT_TESTS_SERVER_PROCESS_H_
