// stalled_clients: opens calls from clients that never read (tests/reliability/stalled_reader.h:
// a 0-byte HTTP/2 window) against an int4kv_server running on this machine, keeps their
// connections open for --hold, and prints the server's thread count (/proc/PID/status) every
// --sample_every. The thread figures of docs/RELIABILITY.md come from it:
//
//   bazel run //server:int4kv_server -- --port=127.0.0.1:50051 --threads=2
//       --write_stall_timeout=2s &
//   bazel run //tests/reliability:stalled_clients -- --port=50051
//       --server_pid=$(pgrep -f 'int4kv_server --port') --generate_calls=70 --hold=4s
//       --sample_every=100ms
// (each command on one line)
//
// Exit status: 0 after the hold; 1 if the server cannot be reached or its threads cannot be
// read, and for an unknown flag or one whose value does not parse (Abseil's parser); 2 for
// bad flag values and for a word that is not a flag.
#include <sys/types.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/help_flags.h"
#include "common/monotonic_time.h"
#include "common/parse_flags.h"
#include "proto/generation.grpc.pb.h"
#include "tests/reliability/stalled_reader.h"
#include "tests/reliability/thread_count.h"

ABSL_FLAG(int32_t, port, 0, "the server's port on 127.0.0.1; required");
ABSL_FLAG(int32_t, server_pid, 0, "the server's process id, whose threads are counted; required");
ABSL_FLAG(int32_t, generate_calls, 70, "stalled Generate calls (2 tokens each), in [0, 4096]");
ABSL_FLAG(int32_t, info_calls, 0, "stalled GetServerInfo calls, in [0, 4096]");
ABSL_FLAG(absl::Duration, hold, absl::Seconds(10),
          "how long the connections stay open after the calls start; in (0, 1h]");
ABSL_FLAG(absl::Duration, sample_every, absl::Milliseconds(500),
          "time between thread counts; in [1ms, --hold]");

namespace int4kv {
namespace {

constexpr int32_t kMaxCalls = 4096;

absl::Status CheckFlags() {
  const int32_t port = absl::GetFlag(FLAGS_port);
  if (port < 1 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--port = ", port, ": must be in [1, 65535]"));
  }
  if (absl::GetFlag(FLAGS_server_pid) < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--server_pid = ", absl::GetFlag(FLAGS_server_pid), ": must name a process (>= 1)"));
  }
  for (const auto& [name, value] :
       {std::pair<const char*, int32_t>{"--generate_calls", absl::GetFlag(FLAGS_generate_calls)},
        {"--info_calls", absl::GetFlag(FLAGS_info_calls)}}) {
    if (value < 0 || value > kMaxCalls) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " = ", value, ": must be in [0, ", kMaxCalls, "]"));
    }
  }
  const absl::Duration hold = absl::GetFlag(FLAGS_hold);
  if (hold <= absl::ZeroDuration() || hold > absl::Hours(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--hold = ", absl::FormatDuration(hold), ": must be in (0, 1h]"));
  }
  const absl::Duration every = absl::GetFlag(FLAGS_sample_every);
  if (every < absl::Milliseconds(1) || every > hold) {
    return absl::InvalidArgumentError(absl::StrCat("--sample_every = ", absl::FormatDuration(every),
                                                   ": must be in [1ms, --hold]"));
  }
  return absl::OkStatus();
}

// Opens `count` stalled calls of `method` with `request`, one connection each, into `readers`.
absl::Status StartCalls(int port, int count, const std::string& method, const std::string& request,
                        std::vector<StalledReader>* readers) {
  for (int i = 0; i < count; ++i) {
    absl::StatusOr<StalledReader> reader = StalledReader::Connect(port);
    if (!reader.ok()) return reader.status();
    if (absl::Status started = reader->StartCall(method, request); !started.ok()) return started;
    readers->push_back(std::move(*reader));
  }
  return absl::OkStatus();
}

int Run() {
  if (absl::Status flags = CheckFlags(); !flags.ok()) {
    std::fprintf(stderr, "stalled_clients: %s\n", flags.ToString().c_str());
    return 2;
  }
  const pid_t pid = absl::GetFlag(FLAGS_server_pid);
  const int port = absl::GetFlag(FLAGS_port);
  const absl::StatusOr<int> idle = ThreadCount(pid);
  if (!idle.ok()) {
    std::fprintf(stderr, "stalled_clients: --server_pid: %s\n", idle.status().ToString().c_str());
    return 1;
  }
  std::printf("threads before the calls: %d\n", *idle);

  v1::GenerateRequest generate;
  generate.add_prompt(1);
  generate.add_prompt(5);
  generate.set_max_new_tokens(2);
  std::vector<StalledReader> readers;  // each holds its connection open until the end of Run
  absl::Status started =
      StartCalls(port, absl::GetFlag(FLAGS_generate_calls), "/int4kv.v1.TokenGeneration/Generate",
                 generate.SerializeAsString(), &readers);
  if (started.ok()) {
    started = StartCalls(port, absl::GetFlag(FLAGS_info_calls),
                         "/int4kv.v1.TokenGeneration/GetServerInfo",
                         v1::GetServerInfoRequest().SerializeAsString(), &readers);
  }
  if (!started.ok()) {
    std::fprintf(stderr, "stalled_clients: after %zu calls: %s\n", readers.size(),
                 started.ToString().c_str());
    return 1;
  }
  std::printf("stalled calls open: %zu\n", readers.size());

  const absl::Time start = MonotonicNow();
  const absl::Duration hold = absl::GetFlag(FLAGS_hold);
  const absl::Duration every = absl::GetFlag(FLAGS_sample_every);
  int most = *idle, last = *idle;
  for (absl::Duration at = absl::ZeroDuration(); at <= hold; at += every) {
    const absl::Duration wait = start + at - MonotonicNow();
    if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
    const absl::StatusOr<int> threads = ThreadCount(pid);
    if (!threads.ok()) {
      std::fprintf(stderr, "stalled_clients: %s\n", threads.status().ToString().c_str());
      return 1;
    }
    last = *threads;
    most = std::max(most, last);
    std::printf("t=%.1fs threads=%d\n", absl::ToDoubleSeconds(at), last);
    std::fflush(stdout);
  }
  std::printf("threads: %d before, at most %d, %d at the end (connections still open)\n", *idle,
              most, last);
  return 0;
}

}  // namespace
}  // namespace int4kv

int main(int argc, char** argv) {
  int4kv::HelpListsFlagsOf(__FILE__);
  int4kv::ParseFlagsOnly(
      argc, argv,
      "Opens calls that never read against a running int4kv_server and prints its thread "
      "count. Example: stalled_clients --port=50051 --server_pid=PID --generate_calls=70");
  return int4kv::Run();
}
