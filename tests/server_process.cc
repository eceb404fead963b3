#include "tests/server_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <thread>

extern char** environ;

namespace memaudit::testing {

CommandResult RunShell(const std::string& command) {
  CommandResult result;
  std::array<char, 4096> buffer{};
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  while (fgets(buffer.data(), buffer.size(), pipe) != nullptr) result.output += buffer.data();
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

ServerProcess::ServerProcess(const std::string& binary, const std::string& repository,
                             const std::string& scratch, const std::vector<std::string>& extra_args)
    : port_file_(scratch + "/ports"), log_file_(scratch + "/server.log") {
  std::remove(port_file_.c_str());
  std::vector<std::string> args = {binary,
                                   "--model_repository=" + repository,
                                   "--listen=127.0.0.1:0",
                                   "--metrics_listen=127.0.0.1:0",
                                   "--port_file=" + port_file_,
                                   "--threads=2"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log_file_.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
  posix_spawn_file_actions_destroy(&actions);
  for (int i = 0; i < 600 && pid_ > 0; ++i) {
    std::ifstream in(port_file_);
    if (in >> grpc_port_ >> metrics_port_) break;
    grpc_port_ = metrics_port_ = 0;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {  // it gave up
      pid_ = -1;
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

void ServerProcess::Signal(int signal_number) const {
  if (pid_ > 0) kill(pid_, signal_number);
}

int ServerProcess::AwaitExit(double seconds) {
  if (pid_ <= 0) return exit_code_;
  for (int i = 0; pid_ > 0 && i < seconds * 20; ++i) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      return exit_code_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return -1;
}

int ServerProcess::Terminate(double seconds) {
  Signal(SIGTERM);
  return AwaitExit(seconds);
}

std::string ServerProcess::Log() const {
  std::ifstream in(log_file_);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace memaudit::testing
