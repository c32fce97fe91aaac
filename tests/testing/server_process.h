// The int4kv_server binary (a data dependency of the test) run as a child process on a free
// localhost port, for what only a process shows: flags, signals, exit status, reflection
// (which cannot share a process with the tests' reflection client; see proto/reflection.proto).
#ifndef INT4KV_TESTS_TESTING_SERVER_PROCESS_H_
#define INT4KV_TESTS_TESTING_SERVER_PROCESS_H_

#include <grpcpp/grpcpp.h>
#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/health.grpc.pb.h"

namespace int4kv {

class ServerProcess {
 public:
  // Runs server/int4kv_server --port=127.0.0.1:0 --port_file=... --threads=2 `args`, with
  // stdout and stderr in a log file under TEST_TMPDIR, and waits until the port file appears.
  // FailedPrecondition (with the log) if the process exits first or nothing appears in 30 s.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(const std::vector<std::string>& args);

  // Start with a FIFO at `fifo_path` as --model: a server that opens its port and then loads
  // forever (GetServerInfo and Generate answer UNAVAILABLE, health NOT_SERVING). The flag
  // check's open of the checkpoint is let through by one writer; the loader's own open then
  // waits for a writer that never comes.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> StartNeverLoading(
      const std::string& fifo_path, const std::vector<std::string>& args = {});

  // SIGKILL if still running.
  ~ServerProcess();

  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::shared_ptr<grpc::Channel> Channel(
      std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr,
      const std::string& tls_server_name = "") const;

  void Signal(int signal_number);
  // True once the process has ended (does not wait).
  bool Exited();
  // The exit code once the process ends, or -1 if it is still running after `timeout` (then
  // it is killed). A death by signal is 128 + the signal number.
  int Wait(absl::Duration timeout);
  std::string Log() const;

 private:
  ServerProcess(pid_t pid, std::string log_path) : pid_(pid), log_path_(std::move(log_path)) {}

  pid_t pid_;
  const std::string log_path_;
  int port_ = 0;
  int exit_code_ = -1;
  bool exited_ = false;
};

// Polls grpc.health.v1.Health/Check for `service` until it reports `status`; false after
// `timeout`.
bool WaitForHealth(const std::shared_ptr<grpc::Channel>& channel,
                   grpc::health::v1::HealthCheckResponse::ServingStatus status,
                   absl::Duration timeout = absl::Seconds(20), const std::string& service = "");

// Runs a command with /bin/sh, returning its exit code; its output goes to `output` if set.
int RunCommand(const std::string& command, std::string* output = nullptr);

}  // namespace int4kv

#endif  // INT4KV_TESTS_TESTING_SERVER_PROCESS_H_
