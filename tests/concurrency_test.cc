// Many streams at once, and what a client that goes away leaves behind: 64 concurrent streams
// all complete with the engine's own tokens; a cancelled stream and an expired deadline each
// free their KV slots (GetServerInfo shows free slots back at capacity) long before the
// request could have finished; a full queue is RESOURCE_EXHAUSTED naming the limit.
#include <chrono>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/grpc_convert.h"
#include "server/testing/step_gate.h"
#include "tests/testing/generate_call.h"
#include "tests/testing/in_process_server.h"

namespace int4kv {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr int32_t kLongRequestTokens = 500;

TEST(ConcurrencyTest, SixtyFourConcurrentStreamsAllCompleteCorrectly) {
  EngineConfig config = TestEngineConfig();
  config.max_batch = 16;
  InProcessServer server(config);
  constexpr int kStreams = 64;
  std::mt19937 rng(11);
  std::vector<v1::GenerateRequest> requests;
  for (int i = 0; i < kStreams; ++i) {
    std::vector<int32_t> prompt = {1};
    for (int t = static_cast<int>(rng() % 24); t > 0; --t) prompt.push_back(3 + rng() % 500);
    v1::GenerateRequest request = GreedyRequest(prompt, 4 + static_cast<int32_t>(rng() % 28));
    request.set_request_id("c" + std::to_string(i));
    requests.push_back(request);
  }
  // The engine's own outputs (greedy decoding does not depend on what else is batched).
  std::vector<std::shared_ptr<RequestStream>> direct;
  for (const v1::GenerateRequest& request : requests) {
    direct.push_back(*server.engine().Submit(*RequestFromProto(request)));
  }
  std::vector<GenerationResult> expected;
  for (auto& stream : direct) expected.push_back(stream->ReadAll());

  std::vector<GenerateCall> calls(kStreams);
  std::vector<std::thread> threads;
  std::vector<std::unique_ptr<v1::TokenGeneration::Stub>> stubs;
  for (int i = 0; i < 4; ++i) stubs.push_back(server.NewStub());  // 4 channels, 16 calls each
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] { calls[i] = RunGenerate(*stubs[i % stubs.size()], requests[i]); });
  }
  for (std::thread& thread : threads) thread.join();

  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(calls[i].status.ok()) << i << ": " << calls[i].status.error_message();
    EXPECT_THAT(calls[i].tokens, ElementsAreArray(expected[i].tokens)) << i;
    EXPECT_EQ(calls[i].last().finish_reason(), v1::FINISH_REASON_LENGTH) << i;
    EXPECT_EQ(calls[i].last().request_id(), "c" + std::to_string(i));
    EXPECT_EQ(calls[i].last().usage().generated_tokens(), requests[i].max_new_tokens()) << i;
  }
  // Every slot comes back.
  auto stub = server.NewStub();
  WaitForIdle(*stub);
}

// Starts a long generation that the client then abandons (cancel after the first message, or a
// deadline), with the engine held inside the request's attention until the client has gone
// (StepGate), so that the request is running and cannot have finished whatever the machine's
// speed; checks that its slots come back well before it could have finished.
void ExpectSlotsFreedAfterClientGoesAway(bool use_deadline) {
  StepGate gate;
  InProcessServer server(TestEngineConfig(), ServiceOptions(), gate.AttentionFactory());
  auto stub = server.NewStub();
  const v1::ServerInfo before = GetInfo(*stub);
  ASSERT_EQ(before.capacity().slots_free(), before.capacity().slots_total());

  // Cancel: held in the 5th step's attention (stories260K runs 5 attention calls a step), so
  // that the first tokens have gone out; deadline: held in the request's first step.
  const StepGate::Hold hold = gate.HoldAfter(use_deadline ? 1 : 5 * 5);
  grpc::ClientContext context;
  // Long enough to reach the engine on a loaded machine; the gate keeps the request running
  // past it.
  context.set_deadline(std::chrono::system_clock::now() +
                       (use_deadline ? std::chrono::seconds(3) : std::chrono::seconds(60)));
  auto reader = stub->Generate(&context, GreedyRequest({1, 403, 261}, kLongRequestTokens));
  ASSERT_TRUE(gate.WaitUntilHeld(absl::Seconds(30))) << "the request never ran";
  // The running request holds prompt + max_new_tokens slots.
  const v1::ServerInfo running = GetInfo(*stub);
  EXPECT_EQ(running.capacity().running(), 1);
  EXPECT_EQ(running.capacity().slots_free(),
            running.capacity().slots_total() - 3 - kLongRequestTokens);
  const int64_t steps_when_held = running.capacity().engine_steps();
  v1::GenerateResponse response;
  if (!use_deadline) {
    ASSERT_TRUE(reader->Read(&response));
    ASSERT_GT(response.token_ids_size(), 0);
    context.TryCancel();
  }
  while (reader->Read(&response)) {
  }
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(),
            use_deadline ? grpc::StatusCode::DEADLINE_EXCEEDED : grpc::StatusCode::CANCELLED);
  // The server notices the client has gone within its cancel poll (5 ms): its watcher cancels
  // the engine request and stops watching the call. Only then is the engine let go, so that
  // the bound below does not depend on how soon the poll thread runs on a loaded machine.
  EXPECT_TRUE(
      WaitFor([&] { return server.service().generate_calls_in_flight() == 0; }, absl::Seconds(10)))
      << "the server never noticed the client had gone";
  gate.Release();

  v1::ServerInfo after;
  EXPECT_TRUE(WaitFor(
      [&] {
        after = GetInfo(*stub);
        return after.capacity().slots_free() == after.capacity().slots_total();
      },
      absl::Seconds(10)))
      << "free slots stayed at " << after.capacity().slots_free() << " of "
      << after.capacity().slots_total();
  EXPECT_EQ(after.capacity().running(), 0);
  // It was cut short: the engine, cancelled while held, finishes the held step (counted once it
  // ends) and drops the request before running another, where the rest of its 500 tokens would
  // take hundreds of steps.
  EXPECT_EQ(after.capacity().engine_steps() - steps_when_held, 1);
}

TEST(ConcurrencyTest, CancelledStreamFreesItsSlots) { ExpectSlotsFreedAfterClientGoesAway(false); }

TEST(ConcurrencyTest, ExpiredDeadlineFreesItsSlots) { ExpectSlotsFreedAfterClientGoesAway(true); }

TEST(ConcurrencyTest, FullQueueIsResourceExhaustedNamingTheLimit) {
  EngineConfig config = TestEngineConfig();
  config.max_batch = 1;
  config.max_queue = 1;
  StepGate gate;
  InProcessServer server(config, ServiceOptions(), gate.AttentionFactory());
  auto stub = server.NewStub();

  // One request runs, held in its 5th step (5 attention calls a step) so that it cannot finish
  // whatever the machine's speed, and one waits: the queue is full.
  const StepGate::Hold hold = gate.HoldAfter(5 * 5);
  grpc::ClientContext running_context;
  auto running = stub->Generate(&running_context, GreedyRequest({1}, kLongRequestTokens));
  v1::GenerateResponse response;
  ASSERT_TRUE(running->Read(&response));
  ASSERT_TRUE(gate.WaitUntilHeld(absl::Seconds(30))) << "the request never reached its 5th step";
  grpc::ClientContext queued_context;
  auto queued = stub->Generate(&queued_context, GreedyRequest({1, 5}, 8));
  ASSERT_TRUE(WaitFor([&] { return GetInfo(*stub).capacity().queued() == 1; }));

  const GenerateCall rejected = RunGenerate(*stub, GreedyRequest({1, 7}, 8));
  EXPECT_EQ(rejected.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(rejected.status.error_message(), HasSubstr("max_queue = 1"));
  EXPECT_TRUE(rejected.responses.empty());

  // The rejection changed nothing: the queued request still runs once the first one goes.
  running_context.TryCancel();
  gate.Release();
  while (running->Read(&response)) {
  }
  std::vector<int32_t> tokens;
  while (queued->Read(&response)) {
    tokens.insert(tokens.end(), response.token_ids().begin(), response.token_ids().end());
  }
  ASSERT_TRUE(queued->Finish().ok());
  EXPECT_EQ(tokens.size(), 8u);
  EXPECT_EQ(response.finish_reason(), v1::FINISH_REASON_LENGTH);
}

}  // namespace
}  // namespace int4kv
