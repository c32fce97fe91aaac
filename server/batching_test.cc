// Continuous batching on the real model with the INT4 cache: many concurrent requests of
// different lengths, admitted as slots and batch rows free up, each produce exactly the tokens
// they produce when run alone, greedy or sampled with a seed (a step's rows sample in
// parallel).
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "server/engine.h"
#include "server/model_source.h"
#include "server/testing/test_util.h"

namespace int4kv {
namespace {

// `count` requests of random prompts and lengths; with `sampled`, each samples with its own
// seed, by temperature alone, with top_k or with top_p in turn.
std::vector<GenerateRequest> MixedRequests(int count, uint64_t seed, bool sampled = false) {
  std::mt19937_64 rng(seed);
  std::vector<GenerateRequest> requests;
  for (int i = 0; i < count; ++i) {
    std::vector<int32_t> prompt = {1};
    const int length = static_cast<int>(rng() % 70);
    for (int t = 0; t < length; ++t) prompt.push_back(static_cast<int32_t>(3 + rng() % 509));
    GenerateRequest request = GreedyRequest(prompt, 4 + static_cast<int32_t>(rng() % 60));
    if (sampled) {
      request.sampling.temperature = 0.9f;
      if (i % 3 == 1) request.sampling.top_k = 40;
      if (i % 3 == 2) request.sampling.top_p = 0.8f;
      request.sampling.seed = 1000 + i;
    }
    requests.push_back(std::move(request));
  }
  return requests;
}

std::vector<std::vector<int32_t>> RunAlone(const std::vector<GenerateRequest>& requests) {
  EngineConfig config = SmallConfig();
  config.max_batch = 1;
  std::unique_ptr<Engine> engine = *Engine::Create(config, Stories260K(), kDefaultModelPath);
  std::vector<std::vector<int32_t>> outputs;
  for (const GenerateRequest& request : requests) {
    outputs.push_back(RunToEnd(*engine, request).tokens);
  }
  return outputs;
}

void ExpectBatchedOutputsEqualRunningAlone(const std::vector<GenerateRequest>& requests) {
  const std::vector<std::vector<int32_t>> alone = RunAlone(requests);

  EngineConfig config = SmallConfig();
  config.max_batch = 6;         // 16 requests: most wait in the queue at first
  config.max_step_tokens = 40;  // prompts are prefilled in chunks beside decode rows
  std::unique_ptr<Engine> engine = *Engine::Create(config, Stories260K(), kDefaultModelPath);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const GenerateRequest& request : requests) {
    absl::StatusOr<std::shared_ptr<RequestStream>> stream = engine->Submit(request);
    ASSERT_TRUE(stream.ok()) << stream.status();
    streams.push_back(*stream);
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerationResult result = streams[i]->ReadAll();
    EXPECT_EQ(result.finish_reason, FinishReason::kLength);
    ASSERT_EQ(result.tokens.size(), static_cast<size_t>(requests[i].max_new_tokens));
    EXPECT_EQ(result.tokens, alone[i]) << "request " << i;
  }
  // The requests shared steps: run one after another they would take a step per output token
  // at least.
  int64_t output_tokens = 0;
  for (const GenerateRequest& request : requests) output_tokens += request.max_new_tokens;
  EXPECT_LT(engine->GetInfo().steps, output_tokens / 2);
}

TEST(BatchingTest, GreedyOutputsEqualRunningAlone) {
  ExpectBatchedOutputsEqualRunningAlone(MixedRequests(16, 3));
}

TEST(BatchingTest, SampledOutputsEqualRunningAlone) {
  ExpectBatchedOutputsEqualRunningAlone(MixedRequests(16, 5, /*sampled=*/true));
}

// When the KV cache holds only one request at a time, the others wait and every output is
// still exact.
TEST(BatchingTest, RequestsWaitForSlotsWithoutCorruption) {
  const std::vector<GenerateRequest> requests = MixedRequests(5, 9);
  const std::vector<std::vector<int32_t>> alone = RunAlone(requests);
  EngineConfig config = SmallConfig();
  config.kv_capacity_slots = 140;  // every request needs 5..133 slots; two rarely fit together
  std::unique_ptr<Engine> engine = *Engine::Create(config, Stories260K(), kDefaultModelPath);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const GenerateRequest& request : requests) streams.push_back(*engine->Submit(request));
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(streams[i]->ReadAll().tokens, alone[i]) << "request " << i;
  }
  engine->Shutdown(absl::Seconds(10));
  const EngineInfo info = engine->GetInfo();
  EXPECT_EQ(info.slots_free, 140);
  EXPECT_EQ(info.running, 0);
}

}  // namespace
}  // namespace int4kv
