// Client-side helpers of the end-to-end suites: request builders, a Generate call read to the
// end with arrival times, and polling.
#ifndef INT4KV_TESTS_TESTING_GENERATE_CALL_H_
#define INT4KV_TESTS_TESTING_GENERATE_CALL_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "proto/generation.grpc.pb.h"

namespace int4kv {

// A greedy request that runs exactly max_new_tokens tokens (EOS ignored).
v1::GenerateRequest GreedyRequest(const std::vector<int32_t>& prompt, int32_t max_new_tokens);

// Everything one Generate call returned.
struct GenerateCall {
  grpc::Status status;
  std::vector<v1::GenerateResponse> responses;
  std::vector<absl::Time> arrivals;  // when each response was read
  std::vector<int32_t> tokens;       // all token_ids, concatenated
  // The last response (finish reason and usage), or an empty one if none arrived.
  const v1::GenerateResponse& last() const;
};

// Runs Generate to the end with `deadline`; `token`, if set, goes in the authorization header.
GenerateCall RunGenerate(v1::TokenGeneration::Stub& stub, const v1::GenerateRequest& request,
                         absl::Duration deadline = absl::Seconds(30),
                         const std::string& token = "");

// GetServerInfo, failing the test (and returning an empty info) on an RPC error.
v1::ServerInfo GetInfo(v1::TokenGeneration::Stub& stub, const std::string& token = "");

// GetServerInfo once nothing runs or waits and every KV slot is free again (the engine
// publishes its counters after the step that finished the last request, so a client that has
// read a final message may look a moment too early). Fails the test after 10 s.
v1::ServerInfo WaitForIdle(v1::TokenGeneration::Stub& stub);

// Polls `condition` every millisecond until it holds or `timeout` passes; returns the last
// result.
bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout = absl::Seconds(10));

}  // namespace int4kv

#endif  // INT4KV_TESTS_TESTING_GENERATE_CALL_H_
