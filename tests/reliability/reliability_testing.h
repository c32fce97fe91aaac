// Shared pieces of the reliability suites: the int4kv_server binary started and serving, the
// capacity counts that must come back after a fault, greedy reference outputs from an idle
// server, and small checks on streamed tokens.
#ifndef INT4KV_TESTS_RELIABILITY_RELIABILITY_TESTING_H_
#define INT4KV_TESTS_RELIABILITY_RELIABILITY_TESTING_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/generation.grpc.pb.h"
#include "tests/testing/server_process.h"

namespace int4kv {

// True in a build with AddressSanitizer or ThreadSanitizer, where the suites shrink their
// workloads (the assertions stay the same).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitizedBuild = true;
#else
constexpr bool kSanitizedBuild = false;
#endif

// `normal` in a plain build, `sanitized` under a sanitizer.
inline int Scaled(int normal, int sanitized) { return kSanitizedBuild ? sanitized : normal; }

// Starts server/int4kv_server (stories260K, --threads=2, a free port) with `args` and waits
// until its health is SERVING. FailedPrecondition with the server's log otherwise.
absl::StatusOr<std::unique_ptr<ServerProcess>> StartServing(const std::vector<std::string>& args);

// A suite's last check after its faults: the server is still SERVING, and SIGTERM drains and
// stops it cleanly (exit 0, which it returns only once gRPC has shut down) within `timeout`. A
// server left hanging in its drain, or crashing at shutdown, fails here rather than dying unseen to
// the SIGKILL of ~ServerProcess.
void ExpectServingThenCleanStop(ServerProcess& server, absl::Duration timeout = absl::Seconds(30));

// `count` channels to `address`, each its own TCP connection.
std::vector<std::shared_ptr<grpc::Channel>> OpenChannels(const std::string& address, int count);

// What GetServerInfo says about capacity and occupancy, minus the step counter; equal before
// and after a fault means nothing leaked and no limit moved.
struct CapacityCounts {
  int64_t slots_total = 0;
  int64_t slots_free = 0;
  int32_t running = 0;
  int32_t queued = 0;
  int32_t max_batch = 0;
  int32_t max_queue = 0;
  int32_t max_seq_len = 0;
  int32_t max_new_tokens = 0;
  bool draining = false;

  static CapacityCounts From(const v1::ServerInfo& info);
  bool idle() const { return slots_free == slots_total && running == 0 && queued == 0; }
  bool operator==(const CapacityCounts& other) const;
};
std::ostream& operator<<(std::ostream& os, const CapacityCounts& counts);

// Polls GetServerInfo until the server is idle (every slot free, nothing running or queued)
// or `timeout` passes; returns the last counts seen.
CapacityCounts WaitUntilIdle(v1::TokenGeneration::Stub& stub,
                             absl::Duration timeout = absl::Seconds(10));

// A greedy request (EOS ignored, so it runs exactly max_new_tokens): BOS 1, then ids uniform
// in [0, vocab_size).
v1::GenerateRequest RandomGreedyRequest(std::mt19937_64& rng, int32_t vocab_size,
                                        int32_t prompt_len, int32_t max_new_tokens);

// The tokens of each request, run one at a time (an idle server); fails the test on an error.
std::vector<std::vector<int32_t>> IdleOutputs(v1::TokenGeneration::Stub& stub,
                                              const std::vector<v1::GenerateRequest>& requests);

// True if `tokens` is a prefix of `expected` (the empty list is).
bool IsPrefix(const std::vector<int32_t>& tokens, const std::vector<int32_t>& expected);

// "CODE_NAME: message", for failure output.
std::string StatusText(const grpc::Status& status);

// Runs `count` calls of `body(i)` on `threads` threads (each takes the next index); returns
// when all are done.
void RunParallel(int count, int threads, const std::function<void(int)>& body);

}  // namespace int4kv

#endif  // INT4KV_TESTS_RELIABILITY_RELIABILITY_TESTING_H_
