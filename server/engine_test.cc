// The engine's public API on the real stories260K model: submit-time validation, finish
// reasons, sampling determinism, cancellation, queue limits, shutdown and introspection.
#include "server/engine.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kv_cache/testing/address_space_cap.h"
#include "server/engine_device.h"
#include "server/model_source.h"
#include "server/random_weights.h"
#include "server/testing/step_gate.h"
#include "server/testing/test_util.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;

const std::vector<int32_t> kPrompt = {1, 403, 261, 378, 5, 30, 271};

std::unique_ptr<Engine> MakeEngine(EngineConfig config = SmallConfig(),
                                   const KvAttentionFactory& attention = nullptr) {
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(config, Stories260K(), kDefaultModelPath, attention);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? std::move(*engine) : nullptr;
}

// Polls until the scheduler thread has published `running` running requests.
void WaitForRunning(const Engine& engine, int32_t running) {
  for (int i = 0; i < 10000 && engine.GetInfo().running != running; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(engine.GetInfo().running, running);
}

TEST(EngineTest, InfoDescribesModelAndCache) {
  EngineConfig config = SmallConfig();
  config.kv_capacity_slots = 1000;
  std::unique_ptr<Engine> engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  const EngineInfo info = engine->GetInfo();
  EXPECT_EQ(info.device, "cpu");
  EXPECT_EQ(info.model_source, kDefaultModelPath);
  EXPECT_EQ(info.model.dim, 64);
  EXPECT_EQ(info.model.num_layers, 5);
  EXPECT_EQ(info.model.q_heads, 8);
  EXPECT_EQ(info.model.kv_heads, 4);
  EXPECT_EQ(info.model.vocab_size, 512);
  EXPECT_EQ(info.attention, "int4");
  EXPECT_EQ(info.max_batch, 8);
  EXPECT_EQ(info.max_queue, 64);
  EXPECT_EQ(info.max_seq_len, 512);
  EXPECT_EQ(info.max_new_tokens_limit, 511);
  EXPECT_EQ(info.slots_total, 1000);
  EXPECT_EQ(info.slots_free, 1000);
  EXPECT_EQ(info.group_size, 8);
  EXPECT_EQ(info.quant_mode, QuantMode::kSymmetric);
  EXPECT_EQ(info.param_dtype, ParamDtype::kFloat16);
  EXPECT_EQ(info.kv_bytes_per_token, 240);  // 5 layers x 4 heads x (K, V) x (4 + 2) bytes
  EXPECT_EQ(info.kv_pool_bytes, 240 * 1001);
  EXPECT_EQ(info.running, 0);
  EXPECT_EQ(info.queued, 0);
  EXPECT_FALSE(info.draining);
  EXPECT_EQ(info.device_name, CpuModelName());
  EXPECT_FALSE(info.cuda_graphs);
  EXPECT_TRUE(info.graph_buckets.empty());
  EXPECT_EQ(info.kv_gpu_sizing.capacity_slots, 0);
}

TEST(EngineTest, ByteBudgetSizesTheCache) {
  EngineConfig config = SmallConfig();
  config.kv_budget_bytes = 1 << 20;
  std::unique_ptr<Engine> engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  const EngineInfo info = engine->GetInfo();
  EXPECT_EQ(info.slots_total, (1 << 20) / 240 - 1);
  EXPECT_EQ(info.kv_pool_bytes, ((1 << 20) / 240) * 240);
  EXPECT_EQ(engine->config().kv_capacity_slots, info.slots_total);
  EXPECT_EQ(RunToEnd(*engine, GreedyRequest(kPrompt, 5)).tokens.size(), 5u);
}

TEST(EngineTest, GpuMemoryFractionOnCpuIsInvalid) {
  EngineConfig config = SmallConfig();
  config.kv_gpu_memory_fraction = 0.5;
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(config, Stories260K(), kDefaultModelPath);
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(engine.status().message(), HasSubstr("kv_gpu_memory_fraction needs device cuda"));
}

TEST(EngineTest, LengthFinishAndUsage) {
  std::unique_ptr<Engine> engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  const GenerationResult result = RunToEnd(*engine, GreedyRequest(kPrompt, 9));
  EXPECT_TRUE(result.status.ok());
  EXPECT_EQ(result.finish_reason, FinishReason::kLength);
  EXPECT_EQ(result.tokens.size(), 9u);
  EXPECT_EQ(result.usage.prompt_tokens, 7);
  EXPECT_EQ(result.usage.generated_tokens, 9);
  EXPECT_GT(result.usage.time_to_first_token, absl::ZeroDuration());
  EXPECT_LE(result.usage.time_to_first_token, result.usage.total_time);
}

TEST(EngineTest, StopTokenEndsTheRequest) {
  std::unique_ptr<Engine> engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  const std::vector<int32_t> free_run = RunToEnd(*engine, GreedyRequest(kPrompt, 30)).tokens;
  // Stop at the 6th token's id: generation ends at its first occurrence, which is streamed.
  // Any of the stop ids counts, not only the first listed.
  GenerateRequest request = GreedyRequest(kPrompt, 30);
  request.stop_token_ids = {511, free_run[5]};
  const size_t first = std::find(free_run.begin(), free_run.end(), free_run[5]) - free_run.begin();
  ASSERT_EQ(std::find(free_run.begin(), free_run.begin() + first + 1, 511),
            free_run.begin() + first + 1);
  GenerationResult result = RunToEnd(*engine, request);
  EXPECT_EQ(result.finish_reason, FinishReason::kStop);
  EXPECT_TRUE(result.status.ok());
  EXPECT_EQ(result.tokens, std::vector<int32_t>(free_run.begin(), free_run.begin() + first + 1));
  EXPECT_EQ(result.usage.generated_tokens, static_cast<int32_t>(first + 1));
  // A stop token that is also the last token max_new_tokens allows ends the request as a stop.
  request.max_new_tokens = static_cast<int32_t>(first + 1);
  result = RunToEnd(*engine, request);
  EXPECT_EQ(result.finish_reason, FinishReason::kStop);
  EXPECT_EQ(result.tokens.size(), first + 1);
}

// The time to the first token is that of the first, not of a later one: over 200 tokens it is
// a small part of the whole.
TEST(EngineTest, TimeToFirstTokenIsTheFirstTokens) {
  std::unique_ptr<Engine> engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  const GenerationResult result = RunToEnd(*engine, GreedyRequest(kPrompt, 200));
  ASSERT_TRUE(result.status.ok());
  ASSERT_EQ(result.tokens.size(), 200u);
  EXPECT_LT(result.usage.time_to_first_token, result.usage.total_time / 2)
      << result.usage.time_to_first_token << " of " << result.usage.total_time;
}

// Requests without a seed each get their own: two sampled requests alike in all else differ.
TEST(EngineTest, UnseededRequestsSampleDifferently) {
  std::unique_ptr<Engine> engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  GenerateRequest request = GreedyRequest(kPrompt, 32);
  request.sampling.temperature = 1.0f;
  const GenerationResult a = RunToEnd(*engine, request);
  const GenerationResult b = RunToEnd(*engine, request);
  ASSERT_TRUE(a.status.ok());
  ASSERT_TRUE(b.status.ok());
  EXPECT_NE(a.tokens, b.tokens) << "two unseeded requests drew the same 32 tokens";
}

TEST(EngineTest, EosEndsTheRequestUnlessIgnored) {
  // The same weights with EOS set to a token greedy decoding produces.
  std::unique_ptr<Engine> plain = MakeEngine();
  ASSERT_NE(plain, nullptr);
  const std::vector<int32_t> free_run = RunToEnd(*plain, GreedyRequest(kPrompt, 30)).tokens;
  auto weights = std::make_shared<LlamaWeights>(*Stories260K());
  weights->config.eos_token = free_run[4];
  const size_t first = std::find(free_run.begin(), free_run.end(), free_run[4]) - free_run.begin();
  std::unique_ptr<Engine> engine = *Engine::Create(SmallConfig(), weights, "stories, eos moved");
  GenerateRequest request = GreedyRequest(kPrompt, 30);
  request.ignore_eos = false;
  const GenerationResult result = RunToEnd(*engine, request);
  EXPECT_EQ(result.finish_reason, FinishReason::kEos);
  EXPECT_EQ(result.tokens.size(), first + 1);
  EXPECT_EQ(result.tokens.back(), free_run[4]);
  request.ignore_eos = true;
  const GenerationResult ignored = RunToEnd(*engine, request);
  EXPECT_EQ(ignored.finish_reason, FinishReason::kLength);
  EXPECT_EQ(ignored.tokens, free_run);
  // A stop id that is also the EOS token finishes as a stop, as the proto says.
  request.ignore_eos = false;
  request.stop_token_ids = {free_run[4]};
  const GenerationResult stopped = RunToEnd(*engine, request);
  EXPECT_EQ(stopped.finish_reason, FinishReason::kStop);
  EXPECT_EQ(stopped.tokens.size(), first + 1);
}

TEST(EngineTest, SeededSamplingIsReproducibleInAnyBatch) {
  GenerateRequest request = GreedyRequest(kPrompt, 40);
  request.sampling.temperature = 0.9f;
  request.sampling.top_p = 0.95f;
  request.sampling.top_k = 40;
  request.sampling.seed = 1234;
  std::unique_ptr<Engine> engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  const std::vector<int32_t> alone = RunToEnd(*engine, request).tokens;
  // Again, in a batch with other sampled and greedy requests.
  std::vector<std::shared_ptr<RequestStream>> others;
  for (int i = 0; i < 5; ++i) {
    GenerateRequest other = GreedyRequest({1, 100 + i, 7}, 20 + i);
    other.sampling.temperature = i % 2 ? 1.0f : 0.0f;
    others.push_back(*engine->Submit(other));
  }
  std::shared_ptr<RequestStream> batched = *engine->Submit(request);
  EXPECT_EQ(batched->ReadAll().tokens, alone);
  for (const auto& stream : others) stream->ReadAll();
  request.sampling.seed = 1235;
  EXPECT_NE(RunToEnd(*engine, request).tokens, alone);
  // Sampling is really sampling here: different from greedy.
  EXPECT_NE(alone, RunToEnd(*engine, GreedyRequest(kPrompt, 40)).tokens);
}

TEST(EngineTest, TopK1EqualsGreedy) {
  std::unique_ptr<Engine> engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  GenerateRequest request = GreedyRequest(kPrompt, 25);
  request.sampling.temperature = 1.3f;
  request.sampling.top_k = 1;
  EXPECT_EQ(RunToEnd(*engine, request).tokens,
            RunToEnd(*engine, GreedyRequest(kPrompt, 25)).tokens);
}

TEST(EngineTest, InvalidRequestsChangeNothing) {
  std::unique_ptr<Engine> engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  const EngineInfo before = engine->GetInfo();
  auto expect_invalid = [&](const GenerateRequest& request, const std::string& part) {
    const absl::StatusOr<std::shared_ptr<RequestStream>> stream = engine->Submit(request);
    ASSERT_FALSE(stream.ok()) << part;
    EXPECT_EQ(stream.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(stream.status().message()), HasSubstr(part));
  };
  expect_invalid(GreedyRequest({}, 5), "prompt is empty");
  expect_invalid(GreedyRequest({1, 512}, 5), "prompt[1] = 512 is invalid");
  expect_invalid(GreedyRequest({-4}, 5), "prompt[0] = -4");
  expect_invalid(GreedyRequest({1}, 0), "max_new_tokens = 0 is invalid: must be in [1, 511]");
  expect_invalid(GreedyRequest({1}, 512), "max_new_tokens = 512");
  GenerateRequest bad = GreedyRequest({1}, 5);
  bad.sampling.temperature = NAN;
  expect_invalid(bad, "temperature = nan");
  bad = GreedyRequest({1}, 5);
  bad.sampling.top_p = 0;
  expect_invalid(bad, "top_p = 0 is invalid: must be in (0, 1]");
  bad = GreedyRequest({1}, 5);
  bad.sampling.top_k = -1;
  expect_invalid(bad, "top_k = -1");
  // Can never fit: prompt + max_new_tokens above max_seq_len (512).
  expect_invalid(GreedyRequest(std::vector<int32_t>(300, 1), 213),
                 "prompt length (300) + max_new_tokens (213) = 513 exceeds max_seq_len (512)");
  const EngineInfo after = engine->GetInfo();
  EXPECT_EQ(after.queued, 0);
  EXPECT_EQ(after.running, 0);
  EXPECT_EQ(after.slots_free, before.slots_free);
  EXPECT_EQ(after.steps, before.steps);
  // And the engine still serves; the first accepted request gets id 1.
  std::shared_ptr<RequestStream> stream = *engine->Submit(GreedyRequest(kPrompt, 2));
  EXPECT_EQ(stream->id(), 1u);
  EXPECT_EQ(stream->ReadAll().tokens.size(), 2u);
}

TEST(EngineTest, NeverFitsTheCache) {
  EngineConfig config = SmallConfig();
  config.kv_capacity_slots = 50;
  std::unique_ptr<Engine> engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  const absl::StatusOr<std::shared_ptr<RequestStream>> stream =
      engine->Submit(GreedyRequest(kPrompt, 44));  // 7 + 44 = 51 > 50
  EXPECT_EQ(stream.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(stream.status().message()),
              HasSubstr("= 51 exceeds the KV cache capacity (50 token slots)"));
  EXPECT_TRUE(engine->Submit(GreedyRequest(kPrompt, 43)).ok());
  // The advertised limits are the ones the cache allows: a request at them is accepted.
  const EngineInfo info = engine->GetInfo();
  EXPECT_EQ(info.max_seq_len, 50);
  EXPECT_EQ(info.max_new_tokens_limit, 49);
  EXPECT_TRUE(engine->Submit(GreedyRequest({1}, info.max_new_tokens_limit)).ok());
  // Past it, the error quotes the same limit.
  const auto too_many = engine->Submit(GreedyRequest({1}, 100));
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(too_many.status().message()),
              HasSubstr("max_new_tokens = 100 is invalid: must be in [1, 49]"));
}

// A cache too small for any request (one prompt token and one new token) is refused at
// creation rather than served with an empty range of max_new_tokens.
TEST(EngineTest, CacheTooSmallForAnyRequestIsRefused) {
  EngineConfig by_slots = SmallConfig();
  by_slots.kv_capacity_slots = 1;
  EngineConfig by_bytes = SmallConfig();
  by_bytes.kv_budget_bytes = 480;
  for (const auto& [config, field] : {std::pair{by_slots, "EngineConfig.kv_capacity_slots = 1"},
                                      std::pair{by_bytes, "EngineConfig.kv_budget_bytes = 480"}}) {
    const absl::StatusOr<std::unique_ptr<Engine>> engine =
        Engine::Create(config, Stories260K(), kDefaultModelPath);
    ASSERT_FALSE(engine.ok()) << field;
    EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(
        std::string(engine.status().message()),
        HasSubstr(absl::StrCat("token slots (sized by ", field, "): a request needs at least 2")));
  }
  EngineConfig two = SmallConfig();
  two.kv_capacity_slots = 2;
  std::unique_ptr<Engine> engine = MakeEngine(two);
  ASSERT_NE(engine, nullptr);
  EXPECT_EQ(engine->GetInfo().max_new_tokens_limit, 1);
  EXPECT_EQ((*engine->Submit(GreedyRequest({1}, 1)))->ReadAll().tokens.size(), 1u);
}

// Rows free at the next step take queued requests then, so they are not counted as waiting:
// an idle engine accepts max_batch + max_queue requests submitted at once, whether or not its
// scheduler thread has admitted some between the submissions; one more is refused.
TEST(EngineTest, IdleEngineAcceptsABatchAndAQueueAtOnce) {
  EngineConfig config = SmallConfig();
  config.max_batch = 4;
  config.max_queue = 1;
  std::unique_ptr<Engine> engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 5; ++i) {
    const absl::StatusOr<std::shared_ptr<RequestStream>> stream =
        engine->Submit(GreedyRequest(kPrompt, 400));
    ASSERT_TRUE(stream.ok()) << "request " << i << ": " << stream.status();
    streams.push_back(*stream);
  }
  const absl::StatusOr<std::shared_ptr<RequestStream>> rejected =
      engine->Submit(GreedyRequest(kPrompt, 400));
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kResourceExhausted);
  WaitForRunning(*engine, 4);
  EXPECT_EQ(engine->GetInfo().queued, 1);
  for (const auto& stream : streams) EXPECT_TRUE(engine->Cancel(stream->id()).ok());
}

// When the KV cache, not the batch rows, is what is full, the free rows admit nobody at the
// next step: the requests behind the running one wait, and only max_queue of them are taken.
TEST(EngineTest, QueueBoundHoldsWhenTheCacheIsFull) {
  EngineConfig config = SmallConfig();
  config.max_batch = 4;
  config.max_queue = 1;
  config.kv_capacity_slots = 7 + 400 + 50;  // one request of kPrompt + 400 tokens at a time
  std::unique_ptr<Engine> engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  std::shared_ptr<RequestStream> running = *engine->Submit(GreedyRequest(kPrompt, 400));
  WaitForRunning(*engine, 1);
  std::shared_ptr<RequestStream> waiting = *engine->Submit(GreedyRequest(kPrompt, 400));
  const absl::StatusOr<std::shared_ptr<RequestStream>> rejected =
      engine->Submit(GreedyRequest(kPrompt, 400));
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(rejected.status().message()),
              HasSubstr("request queue is full (max_queue = 1 waiting requests)"));
  // A request small enough for the free slots would not wait on its own, but it cannot pass
  // the waiting one (admission is in order): it would wait too, and is refused.
  EXPECT_EQ(engine->Submit(GreedyRequest(kPrompt, 10)).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(engine->GetInfo().queued, 1);
  ASSERT_TRUE(engine->Cancel(waiting->id()).ok());
  // With nobody waiting, the small request fits beside the running one.
  std::shared_ptr<RequestStream> small = *engine->Submit(GreedyRequest(kPrompt, 10));
  EXPECT_EQ(small->ReadAll().finish_reason, FinishReason::kLength);
  ASSERT_TRUE(engine->Cancel(running->id()).ok());
  EXPECT_EQ(running->ReadAll().finish_reason, FinishReason::kCancelled);
}

// engine_steps counts forward passes: for one request alone, one per token it produced. The
// wake-up that cancels it runs none, and must not count.
TEST(EngineTest, StepsCountForwardPassesOnly) {
  EngineConfig config = SmallConfig();
  config.max_batch = 1;
  StepGate gate;
  std::unique_ptr<Engine> engine = MakeEngine(config, gate.AttentionFactory());
  ASSERT_NE(engine, nullptr);
  // Held in the attention of its 10th step (5 layers, 5 calls a step): running, not finished.
  const StepGate::Hold hold = gate.HoldAfter(5 * 10);
  std::shared_ptr<RequestStream> stream = *engine->Submit(GreedyRequest(kPrompt, 400));
  ASSERT_TRUE(gate.WaitUntilHeld(absl::Seconds(30)));
  ASSERT_TRUE(engine->Cancel(stream->id()).ok());
  gate.Release();
  const GenerationResult result = stream->ReadAll();
  WaitForRunning(*engine, 0);
  ASSERT_LT(result.tokens.size(), 400u);
  // The scheduler thread publishes the count right after the step that freed the request.
  for (int i = 0; i < 1000 && engine->GetInfo().steps != static_cast<int64_t>(result.tokens.size());
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(engine->GetInfo().steps, static_cast<int64_t>(result.tokens.size()));
}

// A step boundary admits every queued request that fits, not one a step: requests that queue
// while a step runs all join the next step.
TEST(EngineTest, AStepBoundaryAdmitsEveryQueuedRequestThatFits) {
  StepGate gate;
  std::unique_ptr<Engine> engine = MakeEngine(SmallConfig(), gate.AttentionFactory());
  ASSERT_NE(engine, nullptr);
  // Held in the last attention call of the first request's 2nd step (5 calls a step).
  const StepGate::Hold hold = gate.HoldAfter(5 * 2);
  std::shared_ptr<RequestStream> first = *engine->Submit(GreedyRequest(kPrompt, 400));
  ASSERT_TRUE(gate.WaitUntilHeld(absl::Seconds(30)));
  std::vector<std::shared_ptr<RequestStream>> queued;
  for (int i = 0; i < 3; ++i) queued.push_back(*engine->Submit(GreedyRequest(kPrompt, 100)));
  EXPECT_EQ(engine->GetInfo().queued, 3);
  EXPECT_EQ(engine->GetInfo().running, 1);
  // Held again in the next step's first call: the boundary before it has admitted all three.
  const StepGate::Hold next_step = gate.HoldAfter(1);
  ASSERT_TRUE(gate.WaitUntilHeld(absl::Seconds(30)));
  const EngineInfo info = engine->GetInfo();
  EXPECT_EQ(info.running, 4);
  EXPECT_EQ(info.queued, 0);
  gate.Release();
  for (const std::shared_ptr<RequestStream>& stream : queued) {
    EXPECT_EQ(stream->ReadAll().finish_reason, FinishReason::kLength);
  }
  ASSERT_TRUE(engine->Cancel(first->id()).ok());
  EXPECT_EQ(first->ReadAll().finish_reason, FinishReason::kCancelled);
}

TEST(EngineTest, QueueFullIsResourceExhausted) {
  EngineConfig config = SmallConfig();
  config.max_batch = 1;
  config.max_queue = 2;
  std::unique_ptr<Engine> engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  std::shared_ptr<RequestStream> running = *engine->Submit(GreedyRequest(kPrompt, 500));
  WaitForRunning(*engine, 1);
  std::shared_ptr<RequestStream> queued1 = *engine->Submit(GreedyRequest(kPrompt, 5));
  std::shared_ptr<RequestStream> queued2 = *engine->Submit(GreedyRequest(kPrompt, 5));
  const absl::StatusOr<std::shared_ptr<RequestStream>> rejected =
      engine->Submit(GreedyRequest(kPrompt, 5));
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(rejected.status().message()),
              HasSubstr("request queue is full (max_queue = 2 waiting requests)"));
  EXPECT_EQ(engine->GetInfo().queued, 2);
  // Cancelling a queued request finishes it at once and makes room.
  ASSERT_TRUE(engine->Cancel(queued1->id()).ok());
  EXPECT_EQ(engine->Cancel(queued1->id()).code(), absl::StatusCode::kNotFound)
      << "a cancelled queued request is still known to the engine";
  const GenerationResult cancelled = queued1->ReadAll();
  EXPECT_EQ(cancelled.finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(cancelled.status.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(cancelled.tokens.empty());
  EXPECT_EQ(engine->GetInfo().queued, 1);
  EXPECT_TRUE(engine->Submit(GreedyRequest(kPrompt, 5)).ok());
  ASSERT_TRUE(engine->Cancel(running->id()).ok());
  EXPECT_EQ(running->ReadAll().finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(queued2->ReadAll().finish_reason, FinishReason::kLength);
}

// A request's end reaches its client only after the engine has freed its row and slots and
// published that: GetInfo shows them free at once (no polling), and a client that submits
// again at once is not refused for the row it has just left, even with the queue full.
TEST(EngineTest, ARequestEndsWithItsRowAndSlotsAlreadyFree) {
  EngineConfig config = SmallConfig();
  config.max_batch = 1;
  config.max_queue = 1;
  std::unique_ptr<Engine> engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  const int64_t total = engine->GetInfo().slots_total;
  for (int i = 0; i < 20; ++i) {
    std::shared_ptr<RequestStream> alone = *engine->Submit(GreedyRequest(kPrompt, 2));
    ASSERT_EQ(alone->ReadAll().finish_reason, FinishReason::kLength);
    const EngineInfo info = engine->GetInfo();
    EXPECT_EQ(info.running, 0) << "round " << i;
    EXPECT_EQ(info.slots_free, total) << "round " << i;

    // The batch row taken and the one queue place taken: the first request's end frees the
    // row for the queued one, and the queue place for a new request.
    std::shared_ptr<RequestStream> first = *engine->Submit(GreedyRequest(kPrompt, 2));
    std::shared_ptr<RequestStream> queued = *engine->Submit(GreedyRequest(kPrompt, 2));
    ASSERT_EQ(first->ReadAll().finish_reason, FinishReason::kLength);
    const absl::StatusOr<std::shared_ptr<RequestStream>> again =
        engine->Submit(GreedyRequest(kPrompt, 2));
    ASSERT_TRUE(again.ok()) << "round " << i << ": " << again.status();
    EXPECT_EQ(queued->ReadAll().finish_reason, FinishReason::kLength);
    EXPECT_EQ((*again)->ReadAll().finish_reason, FinishReason::kLength);
  }
}

TEST(EngineTest, CancelTakesEffectWithinOneStepAndFreesSlots) {
  StepGate gate;
  std::unique_ptr<Engine> engine = MakeEngine(SmallConfig(), gate.AttentionFactory());
  ASSERT_NE(engine, nullptr);
  const int64_t total = engine->GetInfo().slots_total;
  // Cancelled while held in the attention of its 3rd step (5 calls a step), so that it is
  // running, cannot have finished, and has a step in flight.
  const StepGate::Hold hold = gate.HoldAfter(5 * 3);
  std::shared_ptr<RequestStream> stream = *engine->Submit(GreedyRequest(kPrompt, 500));
  StreamEvent event;
  ASSERT_TRUE(stream->Next(&event));
  ASSERT_EQ(event.type, StreamEvent::Type::kToken);
  ASSERT_TRUE(gate.WaitUntilHeld(absl::Seconds(30)));
  EXPECT_LT(engine->GetInfo().slots_free, total);
  ASSERT_TRUE(engine->Cancel(stream->id()).ok());
  gate.Release();
  // Everything produced before Cancel returned is readable now; at most the one step that was
  // in flight may add a token after it.
  int before = 1;
  bool finished = false;
  while (stream->NextFor(&event, absl::ZeroDuration())) {
    if (event.type == StreamEvent::Type::kFinish) {
      finished = true;
      break;
    }
    ++before;
  }
  int after = 0;
  while (!finished && stream->Next(&event)) {
    if (event.type == StreamEvent::Type::kFinish) break;
    ++after;
  }
  EXPECT_LE(after, 1);
  EXPECT_EQ(event.type, StreamEvent::Type::kFinish);
  EXPECT_EQ(event.finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(event.status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(event.usage.generated_tokens, before + after);
  EXPECT_LT(event.usage.generated_tokens, 500);
  // The cancellation and the slot release happen in the same locked section as the finish.
  const EngineInfo info = engine->GetInfo();
  EXPECT_EQ(info.slots_free, total);
  EXPECT_EQ(info.running, 0);
  EXPECT_EQ(engine->Cancel(stream->id()).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(engine->Cancel(12345).code(), absl::StatusCode::kNotFound);
}

TEST(EngineTest, DrainRefusesNewWorkAndLetsRequestsFinish) {
  std::unique_ptr<Engine> engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  std::shared_ptr<RequestStream> running = *engine->Submit(GreedyRequest(kPrompt, 200));
  std::shared_ptr<RequestStream> queued = *engine->Submit(GreedyRequest(kPrompt, 20));
  std::thread shutdown([&] { engine->Shutdown(absl::Seconds(60)); });
  for (int i = 0; i < 10000 && !engine->GetInfo().draining; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const absl::StatusOr<std::shared_ptr<RequestStream>> refused =
      engine->Submit(GreedyRequest(kPrompt, 3));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("shutting down"));
  shutdown.join();
  const GenerationResult a = running->ReadAll(), b = queued->ReadAll();
  EXPECT_EQ(a.finish_reason, FinishReason::kLength);
  EXPECT_EQ(a.tokens.size(), 200u);
  EXPECT_EQ(b.finish_reason, FinishReason::kLength);
  EXPECT_EQ(b.tokens.size(), 20u);
  engine->Shutdown(absl::ZeroDuration());  // idempotent
  EXPECT_EQ(engine->Submit(GreedyRequest(kPrompt, 3)).status().code(),
            absl::StatusCode::kUnavailable);
}

// StopAccepting refuses new requests at once, without waiting or stopping anything: what is
// queued or running still finishes, and a later Shutdown drains it.
TEST(EngineTest, StopAcceptingRefusesAtOnceAndKeepsRunning) {
  std::unique_ptr<Engine> engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  std::shared_ptr<RequestStream> running = *engine->Submit(GreedyRequest(kPrompt, 50));
  engine->StopAccepting();
  EXPECT_TRUE(engine->GetInfo().draining);
  const absl::StatusOr<std::shared_ptr<RequestStream>> refused =
      engine->Submit(GreedyRequest(kPrompt, 3));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  const GenerationResult result = running->ReadAll();
  EXPECT_EQ(result.finish_reason, FinishReason::kLength);
  EXPECT_EQ(result.tokens.size(), 50u);
  engine->Shutdown(absl::Seconds(60));
}

// An infinite drain timeout waits for the running request (it once overflowed the clock in
// wait_for and cancelled everything at once).
TEST(EngineTest, InfiniteDrainTimeoutWaitsForRequests) {
  std::unique_ptr<Engine> engine = MakeEngine();
  ASSERT_NE(engine, nullptr);
  std::shared_ptr<RequestStream> running = *engine->Submit(GreedyRequest(kPrompt, 200));
  StreamEvent event;
  ASSERT_TRUE(running->Next(&event));
  engine->Shutdown(absl::InfiniteDuration());
  const GenerationResult result = running->ReadAll();
  EXPECT_EQ(result.finish_reason, FinishReason::kLength);
  EXPECT_EQ(result.tokens.size(), 199u);  // the first token was read above
}

// EndDrain (a second signal) cuts an unlimited drain short: what is still queued or running
// ends Unavailable, and Shutdown returns.
TEST(EngineTest, EndDrainCutsAnInfiniteDrainShort) {
  EngineConfig config = SmallConfig();
  config.max_batch = 1;
  std::unique_ptr<Engine> engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 8; ++i) streams.push_back(*engine->Submit(GreedyRequest(kPrompt, 500)));
  StreamEvent event;
  ASSERT_TRUE(streams[0]->Next(&event));
  std::thread shutdown([&] { engine->Shutdown(absl::InfiniteDuration()); });
  for (int i = 0; i < 10000 && !engine->GetInfo().draining; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  engine->EndDrain();
  shutdown.join();  // without EndDrain, after all 4,000 tokens
  const GenerationResult last = streams.back()->ReadAll();  // 3,500 tokens behind the first
  EXPECT_LT(last.tokens.size(), 500u);
  EXPECT_EQ(last.finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(last.status.code(), absl::StatusCode::kUnavailable) << last.status;
}

TEST(EngineTest, DrainTimeoutCancelsWithUnavailable) {
  EngineConfig config = SmallConfig();
  config.max_batch = 1;
  std::unique_ptr<Engine> engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  std::shared_ptr<RequestStream> running = *engine->Submit(GreedyRequest(kPrompt, 500));
  std::shared_ptr<RequestStream> queued = *engine->Submit(GreedyRequest(kPrompt, 5));
  StreamEvent event;
  ASSERT_TRUE(running->Next(&event));
  engine->Shutdown(absl::ZeroDuration());
  const GenerationResult results[] = {running->ReadAll(), queued->ReadAll()};
  EXPECT_LT(results[0].tokens.size(), 500u);
  EXPECT_TRUE(results[1].tokens.empty());
  for (const GenerationResult& cut : results) {
    EXPECT_EQ(cut.finish_reason, FinishReason::kCancelled);
    EXPECT_EQ(cut.status.code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(std::string(cut.status.message()),
                HasSubstr("shut down before the request finished"));
  }
  const EngineInfo info = engine->GetInfo();
  EXPECT_EQ(info.running, 0);
  EXPECT_EQ(info.queued, 0);
  EXPECT_EQ(info.slots_free, info.slots_total);
}

TEST(EngineTest, CreateFromSource) {
  EngineConfig config = SmallConfig();
  config.max_seq_len = 64;
  absl::StatusOr<std::unique_ptr<Engine>> tiny = Engine::CreateFromSource(config, "tiny:1", 3);
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_EQ((*tiny)->GetInfo().model_source, "tiny:1");
  EXPECT_EQ((*tiny)->GetInfo().model.num_layers, 1);
  EXPECT_EQ(RunToEnd(**tiny, GreedyRequest({1, 2, 3}, 5)).tokens.size(), 5u);
  EXPECT_EQ(Engine::CreateFromSource(config, "bogus").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Engine::CreateFromSource(config, "/missing/model.bin").status().code(),
            absl::StatusCode::kNotFound);
  config.group_size = 16;  // stories260K has head_dim 8
  EXPECT_THAT(std::string(Engine::CreateFromSource(config, kDefaultModelPath).status().message()),
              HasSubstr("group_size = 16"));
}

// The limits allow host buffers past any host's memory (logits grow with max_batch x vocab):
// such an engine is ResourceExhausted, naming the sizes, rather than an uncaught bad_alloc.
TEST(EngineTest, HostBuffersThatDoNotFitAreResourceExhausted) {
  ModelConfig model = *PresetConfig("tiny");
  model.vocab_size = 1 << 20;  // 4096 rows of logits: 16 GiB
  auto weights = std::make_shared<const LlamaWeights>(*RandomWeights(model, 1));
  EngineConfig config = SmallConfig();
  config.max_batch = 4096;
  config.max_step_tokens = 4096;
  config.kv_capacity_slots = 1024;  // the cache is not what fails here
  ScopedAddressSpaceCap cap(int64_t{1} << 30);
  if (!cap.active()) GTEST_SKIP() << "cannot cap the address space here";
  const absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(config, weights, "big");
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kResourceExhausted) << engine.status();
  EXPECT_THAT(std::string(engine.status().message()),
              ::testing::HasSubstr("max_batch = 4096 rows of vocab 1048576"));
}

// A forward pass whose logits are all NaN (a numeric overflow) has no token to give: the
// request ends INTERNAL saying so, greedy or sampled, instead of streaming a made-up token, and
// the engine keeps serving.
TEST(EngineTest, AllNanLogitsFailTheRequestNotTheEngine) {
  LlamaWeights broken = *RandomWeights(*PresetConfig("tiny"), 1);
  broken.final_norm.assign(broken.final_norm.size(), std::numeric_limits<float>::quiet_NaN());
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(SmallConfig(), std::make_shared<const LlamaWeights>(std::move(broken)), "nan");
  ASSERT_TRUE(engine.ok()) << engine.status();
  GenerateRequest sampled = GreedyRequest({1, 2, 3}, 5);
  sampled.sampling.temperature = 0.8f;
  // More failed requests than kFailedStepsToStop failed steps: they are not step failures.
  for (const GenerateRequest& request :
       {GreedyRequest({1, 2, 3}, 5), sampled, GreedyRequest({4}, 2), sampled}) {
    const GenerationResult result = RunToEnd(**engine, request);
    EXPECT_EQ(result.status.code(), absl::StatusCode::kInternal) << result.status;
    EXPECT_THAT(std::string(result.status.message()), HasSubstr("logits"));
    EXPECT_TRUE(result.tokens.empty());
  }
  const EngineInfo info = (*engine)->GetInfo();
  EXPECT_EQ(info.slots_free, info.slots_total);
  EXPECT_TRUE(info.failure.empty()) << info.failure;
}

}  // namespace
}  // namespace int4kv
