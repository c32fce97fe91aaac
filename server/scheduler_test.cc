// The scheduler driven step by step (no engine thread), on the real stories260K weights.
#include "server/scheduler.h"

#include <map>
#include <memory>
#include <random>
#include <vector>

#include "common/monotonic_time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/testing/test_util.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;

EngineConfig Resolved(EngineConfig config) {
  absl::StatusOr<EngineConfig> resolved = config.Resolve(Stories260K()->config);
  EXPECT_TRUE(resolved.ok()) << resolved.status();
  return *resolved;
}

PendingRequest Pending(uint64_t id, GenerateRequest request) {
  PendingRequest pending;
  pending.id = id;
  pending.request = std::move(request);
  pending.seed = id;
  pending.stream = std::make_shared<RequestStream>(id);
  pending.submit_time = MonotonicNow();
  return pending;
}

// Every row of req_to_token is free and every slot is back.
void ExpectEmpty(const Scheduler& scheduler) {
  const KvCache& cache = scheduler.cache();
  EXPECT_EQ(cache.slots().free_count(), cache.slots().capacity());
  EXPECT_EQ(cache.requests().live_count(), 0);
  for (int32_t row = 0; row < cache.requests().max_requests(); ++row) {
    EXPECT_FALSE(cache.requests().IsLive(row)) << row;
  }
}

// Random admissions, natural finishes (length, stop, EOS) and cancellations: at every step the
// slots in use are exactly the running requests' reservations and the live rows are exactly
// the running requests; at the end everything is free.
TEST(SchedulerTest, SlotAccountingUnderRandomTraffic) {
  EngineConfig config = SmallConfig();
  config.max_batch = 6;
  config.kv_capacity_slots = 300;  // tight: requests regularly wait for slots
  config.max_step_tokens = 24;     // long prompts are prefilled in chunks
  std::unique_ptr<Scheduler> scheduler = *Scheduler::Create(Resolved(config), Stories260K());
  std::mt19937_64 rng(5);
  std::deque<PendingRequest> queue;
  std::map<uint64_t, int64_t> reserved;  // running id -> slots
  std::vector<std::shared_ptr<RequestStream>> streams;
  std::vector<int32_t> asked;  // max_new_tokens of each stream's request
  uint64_t next_id = 1;
  int cancelled = 0, submitted = 0;
  for (int step = 0; step < 400; ++step) {
    if (submitted < 60 && rng() % 3 == 0) {
      GenerateRequest request;
      const int length = 1 + static_cast<int>(rng() % 60);
      for (int i = 0; i < length; ++i) request.prompt.push_back(static_cast<int32_t>(rng() % 512));
      request.max_new_tokens = 1 + static_cast<int32_t>(rng() % 40);
      request.ignore_eos = rng() % 2 == 0;
      if (rng() % 4 == 0) request.stop_token_ids = {static_cast<int32_t>(rng() % 512)};
      request.sampling.temperature = (rng() % 2) ? 0.0f : 1.0f;
      asked.push_back(request.max_new_tokens);
      queue.push_back(Pending(next_id++, std::move(request)));
      streams.push_back(queue.back().stream);
      ++submitted;
    }
    while (!queue.empty() && scheduler->CanAdmit(queue.front())) {
      reserved[queue.front().id] = Scheduler::SlotsNeeded(queue.front().request);
      scheduler->Admit(std::move(queue.front()));
      queue.pop_front();
    }
    if (!reserved.empty() && rng() % 7 == 0) {
      auto it = reserved.begin();
      std::advance(it, rng() % reserved.size());
      ASSERT_TRUE(
          scheduler->Cancel(it->first, FinishReason::kCancelled, absl::CancelledError("test")));
      EXPECT_FALSE(
          scheduler->Cancel(it->first, FinishReason::kCancelled, absl::CancelledError("again")));
      reserved.erase(it);
      ++cancelled;
    }
    for (uint64_t id : scheduler->Step()) ASSERT_EQ(reserved.erase(id), 1u) << id;
    int64_t in_use = 0;
    for (const auto& [id, slots] : reserved) in_use += slots;
    ASSERT_EQ(scheduler->cache().slots().used_count(), in_use) << "step " << step;
    ASSERT_EQ(scheduler->running(), static_cast<int32_t>(reserved.size()));
    ASSERT_EQ(scheduler->cache().requests().live_count(), scheduler->running());
    ASSERT_LE(scheduler->running(), 6);
    if (submitted == 60 && queue.empty() && scheduler->idle()) break;
  }
  EXPECT_EQ(submitted, 60);
  EXPECT_TRUE(queue.empty());
  EXPECT_TRUE(scheduler->idle());
  EXPECT_GT(cancelled, 0);
  ExpectEmpty(*scheduler);
  // Every stream got exactly one finish and no more tokens than it asked for.
  std::map<FinishReason, int> reasons;
  for (size_t i = 0; i < streams.size(); ++i) {
    ASSERT_TRUE(streams[i]->finished());
    const GenerationResult result = streams[i]->ReadAll();
    ++reasons[result.finish_reason];
    EXPECT_EQ(result.usage.generated_tokens, static_cast<int32_t>(result.tokens.size()));
    EXPECT_LE(static_cast<int32_t>(result.tokens.size()), asked[i]) << "stream " << i;
    if (result.finish_reason == FinishReason::kLength) {
      EXPECT_EQ(static_cast<int32_t>(result.tokens.size()), asked[i]) << "stream " << i;
    }
  }
  EXPECT_EQ(reasons[FinishReason::kCancelled], cancelled);
  EXPECT_GT(reasons[FinishReason::kLength], 0);
}

// Prefilling in chunks over several steps gives the same tokens as one-step prefill.
TEST(SchedulerTest, ChunkedPrefillMatchesWholePrefill) {
  std::vector<std::vector<int32_t>> outputs[2];
  for (int variant = 0; variant < 2; ++variant) {
    EngineConfig config = SmallConfig();
    config.max_batch = 3;
    config.max_step_tokens = variant == 0 ? 512 : 5;
    std::unique_ptr<Scheduler> scheduler = *Scheduler::Create(Resolved(config), Stories260K());
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (int i = 0; i < 3; ++i) {
      std::vector<int32_t> prompt = {1};
      for (int t = 0; t < 20 + 7 * i; ++t) prompt.push_back((37 * t + 11 * i) % 500 + 3);
      PendingRequest pending = Pending(i + 1, GreedyRequest(prompt, 12));
      streams.push_back(pending.stream);
      ASSERT_TRUE(scheduler->CanAdmit(pending));
      scheduler->Admit(std::move(pending));
    }
    int steps = 0;
    while (!scheduler->idle()) {
      scheduler->Step();
      ++steps;
    }
    // Whole prefill: 12 steps. Chunks of 5 tokens shared by three prompts of 21..35 tokens
    // take many more.
    if (variant == 0) {
      EXPECT_EQ(steps, 12);
    } else {
      EXPECT_GT(steps, 20);
    }
    for (const auto& stream : streams) outputs[variant].push_back(stream->ReadAll().tokens);
    ExpectEmpty(*scheduler);
  }
  EXPECT_EQ(outputs[0], outputs[1]);
}

TEST(SchedulerTest, WaitsForSlotsAndBatchRows) {
  EngineConfig config = SmallConfig();
  config.max_batch = 2;
  config.kv_capacity_slots = 100;
  std::unique_ptr<Scheduler> scheduler = *Scheduler::Create(Resolved(config), Stories260K());
  PendingRequest a = Pending(1, GreedyRequest({1, 2, 3}, 57));  // 60 slots
  PendingRequest b = Pending(2, GreedyRequest({1, 5, 6}, 57));
  PendingRequest small = Pending(3, GreedyRequest({1}, 9));  // 10 slots
  ASSERT_TRUE(scheduler->CanAdmit(a));
  scheduler->Admit(std::move(a));
  EXPECT_FALSE(scheduler->CanAdmit(b));  // 40 free < 60
  EXPECT_TRUE(scheduler->CanAdmit(small));
  scheduler->Admit(std::move(small));
  PendingRequest tiny = Pending(4, GreedyRequest({1}, 1));
  EXPECT_FALSE(scheduler->CanAdmit(tiny));  // both batch rows taken
  EXPECT_EQ(scheduler->free_slots(), 30);
}

TEST(SchedulerTest, ModelErrorFinishesTheStepsRequests) {
  // The attention fails while `fail` is set: whatever the step returns, the request must end
  // INTERNAL.
  bool fail = false;
  const KvAttentionFactory factory = FailingInt4AttentionFactory([&fail] { return fail; });
  std::unique_ptr<Scheduler> scheduler =
      *Scheduler::Create(Resolved(SmallConfig()), Stories260K(), factory);
  PendingRequest a = Pending(1, GreedyRequest({1, 2, 3}, 10));
  std::shared_ptr<RequestStream> stream = a.stream;
  scheduler->Admit(std::move(a));
  scheduler->Step();
  fail = true;
  EXPECT_EQ(scheduler->Step(), std::vector<uint64_t>{1});
  const GenerationResult result = stream->ReadAll();
  EXPECT_EQ(result.finish_reason, FinishReason::kError);
  EXPECT_EQ(result.status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(result.status.message()), HasSubstr("injected attention failure"));
  EXPECT_EQ(result.tokens.size(), 1u);
  ExpectEmpty(*scheduler);
  // The scheduler keeps serving.
  fail = false;
  PendingRequest b = Pending(2, GreedyRequest({1, 2, 3}, 2));
  std::shared_ptr<RequestStream> stream_b = b.stream;
  scheduler->Admit(std::move(b));
  while (!scheduler->idle()) scheduler->Step();
  EXPECT_EQ(stream_b->ReadAll().finish_reason, FinishReason::kLength);
}

// A failed step ends only the requests that had tokens in it: one whose prefill waited for
// the step's token budget took no part, and goes on.
TEST(SchedulerTest, AFailedStepLeavesRequestsOutsideItRunning) {
  bool fail = false;
  const KvAttentionFactory factory = FailingInt4AttentionFactory([&fail] { return fail; });
  EngineConfig config = SmallConfig();
  config.max_batch = 3;
  config.max_step_tokens = 3;
  std::unique_ptr<Scheduler> scheduler =
      *Scheduler::Create(Resolved(config), Stories260K(), factory);
  // The first request's 10-token prompt takes the whole budget of 3 tokens; the second waits.
  PendingRequest in_step = Pending(1, GreedyRequest({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 2));
  PendingRequest waiting = Pending(2, GreedyRequest({1, 2, 3}, 2));
  std::shared_ptr<RequestStream> in_step_stream = in_step.stream;
  std::shared_ptr<RequestStream> waiting_stream = waiting.stream;
  scheduler->Admit(std::move(in_step));
  scheduler->Admit(std::move(waiting));
  fail = true;
  EXPECT_EQ(scheduler->Step(), std::vector<uint64_t>{1});
  EXPECT_EQ(in_step_stream->ReadAll().finish_reason, FinishReason::kError);
  EXPECT_EQ(scheduler->running(), 1);
  fail = false;
  while (!scheduler->idle()) scheduler->Step();
  const GenerationResult result = waiting_stream->ReadAll();
  EXPECT_EQ(result.finish_reason, FinishReason::kLength);
  EXPECT_EQ(result.tokens.size(), 2u);
}

}  // namespace
}  // namespace int4kv
