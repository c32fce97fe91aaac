// Shared pieces of the CUDA path's tests: the real model and scheduler-driven runs.
#ifndef INT4KV_SERVER_CUDA_TESTING_CUDA_TEST_UTIL_H_
#define INT4KV_SERVER_CUDA_TESTING_CUDA_TEST_UTIL_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "server/engine_config.h"
#include "server/llama_weights.h"
#include "server/request.h"
#include "server/testing/test_util.h"  // Stories260K, ValueOrDie

namespace int4kv {

// A CUDA engine config for stories260K: batch 8, everything else resolved from defaults.
EngineConfig CudaConfig();

// `count` requests with prompts of 1..70 tokens (BOS first) and 4..63 new tokens, EOS ignored;
// greedy unless `sampled_every` > 0, which makes every sampled_every-th request sample with
// temperature 0.8, top_k 40 and a fixed seed.
std::vector<GenerateRequest> MixedRequests(int count, uint64_t seed, int sampled_every = 0);

struct SchedulerRun {
  std::vector<std::vector<int32_t>> tokens;  // [request] generated tokens
  int64_t steps = 0;
  int64_t graph_replays = 0;  // of the CUDA model; 0 for the CPU model
};

// Runs `requests` to the end through a Scheduler made from `config` (resolved here): admits
// them in order as rows and slots allow, steps until every one has finished. Aborts the test
// binary on a setup error; a request that does not finish with kLength fails the test.
SchedulerRun RunScheduler(const EngineConfig& config, const std::vector<GenerateRequest>& requests);

// The float32 logits [vocab] that a float16 CUDA model of stories260K gives for the token after
// `tokens` (BOS first), from one step over all of them on a fresh cache. Aborts the test binary
// on a setup error.
std::vector<float> NextTokenLogits(const std::vector<int32_t>& tokens);

}  // namespace int4kv

#endif  // INT4KV_SERVER_CUDA_TESTING_CUDA_TEST_UTIL_H_
