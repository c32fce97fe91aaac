// int4kv_loadgen: a load generator for the int4kv server on this machine. Sends Generate
// streams in a closed loop (N concurrent streams) or an open loop (Poisson arrivals), prints
// a progress line every second to stderr, then reports requests/s, output tokens/s, time to
// first token, inter-token and end-to-end latency (p50/p90/p99) and errors by status code.
//
//   bazel run -c opt //tools:int4kv_loadgen -- --server=127.0.0.1:50051 --concurrency=64
//       --num_requests=2000 --duration=0 --prompt_len=16-64 --output_len=64 --json=/tmp/load.json
//
// Only loopback servers are accepted (localhost, 127.0.0.0/8, [::1]).
// Exit status: 0 when the run completed with at least one request OK (request errors are
// reported, not fatal), 1 if the server could not be reached, stopped answering
// (LoadgenResult::server_lost) or answered no request with OK, 2 for bad flag values (or a
// word that is not a flag), an unwritable --json path or a request mix the server cannot take, 3 if
// a stream that ended OK broke the API (see LoadgenResult::bad_responses), whatever else went wrong
// too; a lost server or no OK request (1) comes before a report that could not be written (2). An
// unknown flag or one whose value does not parse exits 1 (Abseil's parser exits by itself).
//
// Thread ownership: main() is the driver thread (RunLoad); gRPC's threads run the calls.
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/help_flags.h"
#include "common/monotonic_time.h"
#include "common/parse_flags.h"
#include "common/status_macros.h"
#include "proto/generation.grpc.pb.h"
#include "server/grpc_status.h"
#include "server/server_main_options.h"
#include "tools/loadgen_config.h"
#include "tools/loadgen_report.h"
#include "tools/loadgen_runner.h"
#include "tools/loopback_target.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051",
          "HOST:PORT of the server; loopback only (localhost, 127.0.0.0/8, [::1])");
ABSL_FLAG(int32_t, concurrency, 16,
          "closed loop: concurrent streams, each re-sent on finish (a stream refused with "
          "RESOURCE_EXHAUSTED waits until another request finishes)");
ABSL_FLAG(double, rate, 0,
          "requests per second, at most 1e6: > 0 switches to an open loop with Poisson "
          "arrivals");
ABSL_FLAG(int32_t, max_in_flight, 1024,
          "open loop: most streams open at once; arrivals beyond are counted as not sent");
ABSL_FLAG(int64_t, num_requests, 0,
          "stop sending after this many requests (arrivals, open loop) or --duration, whichever "
          "comes first; 0: no limit");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(30),
          "stop sending after this long or --num_requests, whichever comes first; 0: no limit. "
          "Requests in flight then finish");
ABSL_FLAG(std::string, prompt_len, "32",
          "prompt tokens per request: N, or A-B for uniform counts in [A, B]");
ABSL_FLAG(std::string, output_len, "64",
          "max_new_tokens per request: N, or A-B for uniform counts in [A, B]");
ABSL_FLAG(float, temperature, 0.0f, "sampling temperature; 0: greedy");
ABSL_FLAG(bool, ignore_eos, true, "generate exactly max_new_tokens tokens (EOS ignored)");
ABSL_FLAG(uint64_t, seed, 1, "seed of the request mix and the arrival times");
ABSL_FLAG(int32_t, channels, 4, "gRPC connections the streams are spread over");
ABSL_FLAG(absl::Duration, deadline, absl::Seconds(300), "deadline of each request");
ABSL_FLAG(absl::Duration, connect_timeout, absl::Seconds(10),
          "how long to wait for the server's GetServerInfo before giving up, also while the "
          "server is still loading its model; > 0");
ABSL_FLAG(std::string, auth_token, "", "bearer token, if the server requires one");
ABSL_FLAG(std::string, auth_token_file, "",
          "--auth_token read from this file (whitespace around it dropped)");
ABSL_FLAG(bool, progress, true, "print a progress line every second to stderr");
ABSL_FLAG(std::string, json, "", "also write the results as JSON to this path");

namespace int4kv {
namespace {

absl::StatusOr<LoadgenConfig> ConfigFromFlags() {
  LoadgenConfig config;
  ASSIGN_OR_RETURN(config.target, ParseLoopbackTarget(absl::GetFlag(FLAGS_server)));
  config.concurrency = absl::GetFlag(FLAGS_concurrency);
  config.rate = absl::GetFlag(FLAGS_rate);
  config.max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  config.num_requests = absl::GetFlag(FLAGS_num_requests);
  config.duration = absl::GetFlag(FLAGS_duration);
  ASSIGN_OR_RETURN(config.prompt_len,
                   LengthDistribution::Parse("prompt_len", absl::GetFlag(FLAGS_prompt_len)));
  ASSIGN_OR_RETURN(config.output_len,
                   LengthDistribution::Parse("output_len", absl::GetFlag(FLAGS_output_len)));
  config.temperature = absl::GetFlag(FLAGS_temperature);
  config.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  config.seed = absl::GetFlag(FLAGS_seed);
  config.channels = absl::GetFlag(FLAGS_channels);
  config.deadline = absl::GetFlag(FLAGS_deadline);
  ASSIGN_OR_RETURN(config.auth_token,
                   ResolveAuthToken(absl::GetFlag(FLAGS_auth_token),
                                    absl::GetFlag(FLAGS_auth_token_file), /*argv0=*/""));
  config.connect_timeout = absl::GetFlag(FLAGS_connect_timeout);
  config.progress_interval =
      absl::GetFlag(FLAGS_progress) ? absl::Seconds(1) : absl::ZeroDuration();
  RETURN_IF_ERROR(ValidateConfig(config));
  return config;
}

// GetServerInfo, waiting for the server to come up for up to --connect_timeout. wait_for_ready
// covers a port that is not open yet; a server that has opened its port but is still loading
// the model answers UNAVAILABLE ("the server is starting"), so UNAVAILABLE is retried too, with
// a short backoff, until the timeout runs out. Any other error ends the wait at once.
absl::StatusOr<v1::ServerInfo> FetchServerInfo(const LoadgenConfig& config) {
  constexpr absl::Duration kFirstBackoff = absl::Milliseconds(20);
  constexpr absl::Duration kMaxBackoff = absl::Milliseconds(500);
  auto stub = v1::TokenGeneration::NewStub(
      grpc::CreateChannel(config.target, grpc::InsecureChannelCredentials()));
  // The wait is measured on the steady clock; gRPC's deadline, on the system clock, is set
  // from what is left of it at each call.
  const absl::Time give_up = MonotonicNow() + config.connect_timeout;
  absl::Duration backoff = kFirstBackoff;
  grpc::Status last_answer;  // the last UNAVAILABLE, or the final DEADLINE_EXCEEDED
  while (true) {
    grpc::ClientContext context;
    context.set_wait_for_ready(true);
    context.set_deadline(absl::ToChronoTime(absl::Now() + (give_up - MonotonicNow())));
    if (!config.auth_token.empty()) {
      context.AddMetadata("authorization", "Bearer " + config.auth_token);
    }
    v1::ServerInfo info;
    const grpc::Status status = stub->GetServerInfo(&context, v1::GetServerInfoRequest(), &info);
    if (status.ok()) return info;
    const grpc::StatusCode code = status.error_code();
    if (code != grpc::StatusCode::UNAVAILABLE && code != grpc::StatusCode::DEADLINE_EXCEEDED) {
      return absl::UnavailableError(absl::StrCat("GetServerInfo on ", config.target, " failed: ",
                                                 GrpcCodeName(code), ": ", status.error_message()));
    }
    // The server's own answer says more than the deadline that ended the wait after it.
    if (code == grpc::StatusCode::UNAVAILABLE || last_answer.ok()) last_answer = status;
    const absl::Duration left = give_up - MonotonicNow();
    if (code == grpc::StatusCode::DEADLINE_EXCEEDED || left <= absl::ZeroDuration()) {
      return absl::UnavailableError(absl::StrCat(
          "GetServerInfo on ", config.target,
          " still failed when --connect_timeout = ", absl::FormatDuration(config.connect_timeout),
          " ran out: ", GrpcCodeName(last_answer.error_code()), ": ", last_answer.error_message()));
    }
    absl::SleepFor(std::min(backoff, left));
    backoff = std::min(2 * backoff, kMaxBackoff);
  }
}

int Run() {
  const absl::StatusOr<LoadgenConfig> config = ConfigFromFlags();
  if (!config.ok()) {
    std::cerr << "int4kv_loadgen: " << config.status().message() << "\n";
    return 2;
  }
  // The JSON file is opened before the run, so that a bad path costs no load; for appending,
  // so that a run that fails keeps the results already there. A file the open created is
  // removed again if the run is refused before its report, so that no empty report is left.
  // Under `bazel run`, a relative path is the caller's, not the runfiles tree's.
  const std::string json_path = ResolveOutputPath(absl::GetFlag(FLAGS_json));
  std::ofstream json_file;
  struct stat json_stat;
  const bool json_created = !json_path.empty() && stat(json_path.c_str(), &json_stat) != 0;
  absl::Cleanup remove_unwritten_json = [&] {
    if (!json_created) return;
    json_file.close();
    std::remove(json_path.c_str());
  };
  if (!json_path.empty()) {
    json_file.open(json_path, std::ios::app);
    if (!json_file) {
      std::cerr << "int4kv_loadgen: --json = " << json_path << " cannot be written\n";
      return 2;
    }
  }
  const absl::StatusOr<v1::ServerInfo> info = FetchServerInfo(*config);
  if (!info.ok()) {
    std::cerr << "int4kv_loadgen: " << info.status().message() << "\n";
    return 1;
  }
  if (const absl::Status s = CheckAgainstServer(*config, *info); !s.ok()) {
    std::cerr << "int4kv_loadgen: " << s.message() << "\n";
    return 2;
  }
  if (const std::string warning = OverloadWarning(*config, *info); !warning.empty()) {
    std::cerr << "int4kv_loadgen: warning: " << warning << "\n";
  }
  std::cerr << "int4kv_loadgen: " << config->target << ": " << info->model().source() << " on "
            << info->backend().backend() << ", vocab " << info->model().vocab_size()
            << ", max_batch " << info->capacity().max_batch() << ", max_queue "
            << info->capacity().max_queue() << std::endl;
  const LoadgenResult result = RunLoad(
      *config, *info, config->progress_interval > absl::ZeroDuration() ? &std::cerr : nullptr);
  std::cout << FormatTextReport(*config, *info, result) << std::flush;
  bool json_failed = false;
  std::move(remove_unwritten_json).Cancel();
  if (!json_path.empty()) {
    json_file.close();
    json_file.open(json_path, std::ios::trunc);
    json_file << FormatJsonReport(*config, *info, result);
    json_file.close();
    if (!json_file) {
      std::cerr << "int4kv_loadgen: --json: writing " << json_path << " failed\n";
      json_failed = true;
    } else {
      std::cerr << "int4kv_loadgen: JSON report written to " << json_path << "\n";
    }
  }
  if (result.server_lost()) {
    std::cerr << "int4kv_loadgen: the server stopped answering (SERVER LOST in the report)\n";
  } else if (result.sent == 0) {
    std::cerr << "int4kv_loadgen: no request was sent (no arrival fell within the run)\n";
  } else if (result.ok == 0) {
    std::cerr << "int4kv_loadgen: no request ended OK (errors in the report)\n";
  }
  if (result.bad_responses > 0) return 3;
  if (result.server_lost() || result.ok == 0) return 1;
  if (json_failed) return 2;
  return 0;
}

}  // namespace
}  // namespace int4kv

int main(int argc, char** argv) {
  int4kv::HelpListsFlagsOf(__FILE__);
  int4kv::ParseFlagsOnly(
      argc, argv,
      "Load generator for the int4kv server (loopback only). Example: int4kv_loadgen "
      "--server=127.0.0.1:50051 --concurrency=64 --num_requests=2000 --duration=0 "
      "--output_len=64");
  return int4kv::Run();
}
