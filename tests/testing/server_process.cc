#include "tests/testing/server_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace int4kv {
namespace {

constexpr char kServerBinary[] = "server/int4kv_server";

std::string TempDir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

std::string ReadAll(const std::string& path) {
  std::ifstream file(path);
  std::ostringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const std::vector<std::string>& args) {
  static std::atomic<int> counter{0};
  const std::string stem = absl::StrCat(TempDir(), "/server_", getpid(), "_", counter.fetch_add(1));
  const std::string port_file = stem + ".port";
  const std::string log_path = stem + ".log";
  std::vector<std::string> argv = {kServerBinary, "--port=127.0.0.1:0", "--port_file=" + port_file,
                                   "--threads=2"};
  argv.insert(argv.end(), args.begin(), args.end());

  // Everything the child needs is prepared here: between fork and exec it only makes system
  // calls (the test process has other threads, so it must not allocate there).
  std::vector<char*> raw;
  for (std::string& arg : argv) raw.push_back(arg.data());
  raw.push_back(nullptr);
  const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log < 0) return absl::InternalError(absl::StrCat("cannot create ", log_path));
  const pid_t pid = fork();
  if (pid < 0) {
    close(log);
    return absl::InternalError("fork failed");
  }
  if (pid == 0) {
    dup2(log, STDOUT_FILENO);
    dup2(log, STDERR_FILENO);
    execv(raw[0], raw.data());
    _exit(127);
  }
  close(log);
  std::unique_ptr<ServerProcess> process(new ServerProcess(pid, log_path));
  const absl::Time end = absl::Now() + absl::Seconds(30);
  while (absl::Now() < end) {
    const std::string text(absl::StripAsciiWhitespace(ReadAll(port_file)));
    int port = 0;
    if (!text.empty() && absl::SimpleAtoi(text, &port) && port > 0) {
      process->port_ = port;
      return process;
    }
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      process->exited_ = true;
      process->exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return absl::FailedPreconditionError(absl::StrCat("int4kv_server exited with ",
                                                        process->exit_code_, " before listening:\n",
                                                        process->Log()));
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("int4kv_server wrote no port within 30 s:\n", process->Log()));
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::StartNeverLoading(
    const std::string& fifo_path, const std::vector<std::string>& args) {
  if (mkfifo(fifo_path.c_str(), 0600) != 0) {
    return absl::InternalError(absl::StrCat("mkfifo ", fifo_path, ": ", std::strerror(errno)));
  }
  std::atomic<bool> stop_writer{false};
  std::thread writer([&] {  // opens once, as soon as a reader waits, and closes at once
    while (!stop_writer.load()) {
      const int fd = open(fifo_path.c_str(), O_WRONLY | O_NONBLOCK);
      if (fd >= 0) {
        close(fd);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  std::vector<std::string> all_args = args;
  all_args.push_back("--model=" + fifo_path);
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = Start(all_args);
  stop_writer.store(true);
  writer.join();
  return server;
}

ServerProcess::~ServerProcess() {
  if (!exited_) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

std::shared_ptr<grpc::Channel> ServerProcess::Channel(
    std::shared_ptr<grpc::ChannelCredentials> credentials,
    const std::string& tls_server_name) const {
  grpc::ChannelArguments arguments;
  if (!tls_server_name.empty()) arguments.SetSslTargetNameOverride(tls_server_name);
  return grpc::CreateCustomChannel(
      address(), credentials != nullptr ? credentials : grpc::InsecureChannelCredentials(),
      arguments);
}

void ServerProcess::Signal(int signal_number) {
  if (!exited_) kill(pid_, signal_number);
}

bool ServerProcess::Exited() {
  int status = 0;
  if (!exited_ && waitpid(pid_, &status, WNOHANG) == pid_) {
    exited_ = true;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  return exited_;
}

int ServerProcess::Wait(absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  while (!Exited()) {
    if (absl::Now() >= end) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      exited_ = true;
      return -1;
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  return exit_code_;
}

std::string ServerProcess::Log() const { return ReadAll(log_path_); }

bool WaitForHealth(const std::shared_ptr<grpc::Channel>& channel,
                   grpc::health::v1::HealthCheckResponse::ServingStatus status,
                   absl::Duration timeout, const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    if (stub->Check(&context, request, &response).ok() && response.status() == status) {
      return true;
    }
    absl::SleepFor(absl::Milliseconds(2));
  }
  return false;
}

int RunCommand(const std::string& command, std::string* output) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  std::string text;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) text.append(buffer, n);
  const int status = pclose(pipe);
  if (output != nullptr) *output = text;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace int4kv
