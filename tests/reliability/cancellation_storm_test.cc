// Cancellation storm: many clients give up at random points of their streams, concurrently:
// before the call starts, right after sending, through a 1-30 ms deadline, after a random
// number of tokens, and after the last token but before reading the status; a few run to the
// end. Every call ends OK, CANCELLED or DEADLINE_EXCEEDED; every stream is a prefix of the
// request's idle-server output (the full output when OK). Afterwards every KV slot is free,
// nothing is running or queued, and a new request completes with the right tokens.
#include <array>
#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/reliability/reliability_testing.h"
#include "tests/testing/generate_call.h"

namespace int4kv {
namespace {

enum class CancelPoint {
  kBeforeStart,     // TryCancel before the call is started
  kAfterSend,       // TryCancel right after starting, without reading
  kDeadline,        // a 1-30 ms deadline
  kMidStream,       // after a random number of tokens
  kAfterLastToken,  // after the final response, before Finish
  kNever,           // runs to the end
};
constexpr int kCancelPoints = 6;

struct Outcome {
  CancelPoint point;
  grpc::Status status;
  std::vector<int32_t> tokens;
};

Outcome RunWithCancel(v1::TokenGeneration::Stub& stub, const v1::GenerateRequest& request,
                      CancelPoint point, std::mt19937_64& rng) {
  Outcome outcome{point, grpc::Status::OK, {}};
  grpc::ClientContext context;
  const auto now = std::chrono::system_clock::now();
  context.set_deadline(point == CancelPoint::kDeadline
                           ? now + std::chrono::milliseconds(1 + rng() % 30)
                           : now + std::chrono::seconds(60));
  if (point == CancelPoint::kBeforeStart) context.TryCancel();
  auto reader = stub.Generate(&context, request);
  if (point == CancelPoint::kAfterSend) context.TryCancel();
  const size_t cancel_after = 1 + rng() % (request.max_new_tokens() - 1);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    outcome.tokens.insert(outcome.tokens.end(), response.token_ids().begin(),
                          response.token_ids().end());
    if (point == CancelPoint::kMidStream && outcome.tokens.size() >= cancel_after) {
      context.TryCancel();
    }
    if (point == CancelPoint::kAfterLastToken &&
        response.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      context.TryCancel();
    }
  }
  outcome.status = reader->Finish();
  return outcome;
}

TEST(CancellationStormTest, RandomCancelsLeaveNoSlotTakenAndNothingStuck) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      StartServing({"--max_batch=8", "--max_queue=64", "--log_level=warn"});
  ASSERT_TRUE(server.ok()) << server.status();
  const auto channels = OpenChannels((*server)->address(), 4);
  auto stub = v1::TokenGeneration::NewStub(channels[0]);

  std::mt19937_64 rng(23);
  std::vector<v1::GenerateRequest> requests;
  for (int i = 0; i < 8; ++i) {
    requests.push_back(RandomGreedyRequest(rng, 512, 1 + static_cast<int32_t>(rng() % 40),
                                           48 + static_cast<int32_t>(rng() % 49)));
  }
  const std::vector<std::vector<int32_t>> expected = IdleOutputs(*stub, requests);
  const CapacityCounts before = WaitUntilIdle(*stub);
  ASSERT_TRUE(before.idle()) << before;

  const int calls = Scaled(300, 120);
  std::vector<std::unique_ptr<v1::TokenGeneration::Stub>> stubs;
  for (const auto& channel : channels) stubs.push_back(v1::TokenGeneration::NewStub(channel));
  std::vector<Outcome> outcomes(calls);
  RunParallel(calls, 48, [&](int i) {
    std::mt19937_64 call_rng(1000 + i);
    const CancelPoint point = static_cast<CancelPoint>(call_rng() % kCancelPoints);
    outcomes[i] =
        RunWithCancel(*stubs[i % stubs.size()], requests[i % requests.size()], point, call_rng);
  });

  std::array<int, kCancelPoints> cut_short = {};
  int ok = 0;
  for (int i = 0; i < calls; ++i) {
    const Outcome& o = outcomes[i];
    const std::vector<int32_t>& want = expected[i % requests.size()];
    const grpc::StatusCode code = o.status.error_code();
    EXPECT_TRUE(code == grpc::StatusCode::OK || code == grpc::StatusCode::CANCELLED ||
                code == grpc::StatusCode::DEADLINE_EXCEEDED)
        << "call " << i << ": " << StatusText(o.status);
    EXPECT_TRUE(IsPrefix(o.tokens, want)) << "call " << i << " streamed wrong tokens";
    if (code == grpc::StatusCode::OK) {
      ++ok;
      EXPECT_EQ(o.tokens, want) << "call " << i << " ended OK with a partial stream";
    } else if (o.tokens.size() < want.size()) {
      ++cut_short[static_cast<int>(o.point)];
    }
    if (o.point == CancelPoint::kNever) {
      EXPECT_TRUE(o.status.ok()) << "call " << i << ": " << StatusText(o.status);
    }
    if (o.point == CancelPoint::kBeforeStart) {
      EXPECT_EQ(code, grpc::StatusCode::CANCELLED);
      EXPECT_TRUE(o.tokens.empty());
    }
  }
  // Every kind of cancel happened, cutting streams short.
  EXPECT_GT(cut_short[static_cast<int>(CancelPoint::kBeforeStart)], 0);
  EXPECT_GT(cut_short[static_cast<int>(CancelPoint::kAfterSend)], 0);
  EXPECT_GT(cut_short[static_cast<int>(CancelPoint::kDeadline)], 0);
  EXPECT_GT(cut_short[static_cast<int>(CancelPoint::kMidStream)], 0);
  std::printf(
      "cancellation storm: %d calls, %d OK; cut short: before start %d, after send %d, "
      "deadline %d, mid-stream %d\n",
      calls, ok, cut_short[0], cut_short[1], cut_short[2], cut_short[3]);

  // Freed within a few engine steps of the last cancel; nothing stuck.
  const CapacityCounts after = WaitUntilIdle(*stub, absl::Seconds(5));
  EXPECT_EQ(after, before);
  const GenerateCall fresh = RunGenerate(*stub, requests[3], absl::Seconds(30));
  EXPECT_TRUE(fresh.status.ok()) << StatusText(fresh.status);
  EXPECT_EQ(fresh.tokens, expected[3]);
  ExpectServingThenCleanStop(**server);
}

}  // namespace
}  // namespace int4kv
