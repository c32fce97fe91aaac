// Overload: far more simultaneous clients than the server's queue and batch hold
// (--max_batch=4 --max_queue=8, bursts of 96 streams). Every request either completes with
// exactly the tokens an idle server gives it, or is refused with RESOURCE_EXHAUSTED naming the
// queue limit; clients that retry on RESOURCE_EXHAUSTED all get through. Afterwards the
// process is alive and SERVING, every KV slot is free, the counts equal those before the
// bursts, and a reference request gives the same tokens as before.
#include <atomic>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/synchronization/barrier.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/reliability/reliability_testing.h"
#include "tests/testing/generate_call.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;

constexpr int kBatch = 4;
constexpr int kQueue = 8;
constexpr int kDistinctRequests = 12;

class OverloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        StartServing({"--max_batch=" + std::to_string(kBatch),
                      "--max_queue=" + std::to_string(kQueue), "--log_level=warn"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    channels_ = OpenChannels(server_->address(), 4);
    stub_ = v1::TokenGeneration::NewStub(channels_[0]);
    std::mt19937_64 rng(17);
    for (int i = 0; i < kDistinctRequests; ++i) {
      requests_.push_back(RandomGreedyRequest(rng, 512, 2 + static_cast<int32_t>(rng() % 30),
                                              8 + static_cast<int32_t>(rng() % 17)));
    }
    expected_ = IdleOutputs(*stub_, requests_);
    before_ = WaitUntilIdle(*stub_);
    ASSERT_TRUE(before_.idle()) << before_;
  }

  // Checks one call of request `r`: correct tokens or RESOURCE_EXHAUSTED naming the limit.
  // Returns true if it completed.
  bool CheckOutcome(int r, const GenerateCall& call) {
    if (call.status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      EXPECT_THAT(call.status.error_message(), HasSubstr("max_queue = " + std::to_string(kQueue)));
      EXPECT_TRUE(call.tokens.empty());
      return false;
    }
    EXPECT_TRUE(call.status.ok()) << StatusText(call.status);
    EXPECT_EQ(call.tokens, expected_[r]) << "request " << r;
    EXPECT_EQ(call.last().finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(call.last().usage().generated_tokens(), requests_[r].max_new_tokens());
    return call.status.ok();
  }

  std::unique_ptr<ServerProcess> server_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::unique_ptr<v1::TokenGeneration::Stub> stub_;
  std::vector<v1::GenerateRequest> requests_;
  std::vector<std::vector<int32_t>> expected_;
  CapacityCounts before_;
};

TEST_F(OverloadTest, BurstsAreServedOrRefusedAndNothingLeaks) {
  const int bursts = Scaled(3, 2);
  constexpr int kClients = 96;  // 8x what the batch and the queue hold together
  std::vector<std::unique_ptr<v1::TokenGeneration::Stub>> stubs;
  for (const auto& channel : channels_) stubs.push_back(v1::TokenGeneration::NewStub(channel));
  int completed = 0;
  int refused = 0;
  for (int burst = 0; burst < bursts; ++burst) {
    std::vector<GenerateCall> calls(kClients);
    absl::Barrier* start = new absl::Barrier(kClients);  // deleted by the last thread through
    RunParallel(kClients, kClients, [&](int i) {
      if (start->Block()) delete start;
      calls[i] = RunGenerate(*stubs[i % stubs.size()], requests_[i % kDistinctRequests],
                             absl::Seconds(120));
    });
    for (int i = 0; i < kClients; ++i) {
      if (CheckOutcome(i % kDistinctRequests, calls[i])) {
        ++completed;
      } else {
        ++refused;
      }
    }
  }
  // The bursts did overload the server, and it still served what it accepted.
  EXPECT_GE(completed, bursts * (kBatch + kQueue) / 2) << completed << " completed";
  EXPECT_GE(refused, bursts * kClients / 4) << refused << " refused";
  std::printf("overload: %d streams in %d bursts, %d completed, %d RESOURCE_EXHAUSTED\n",
              bursts * kClients, bursts, completed, refused);

  const CapacityCounts after = WaitUntilIdle(*stub_);
  EXPECT_EQ(after, before_);
  EXPECT_EQ(RunGenerate(*stub_, requests_[0]).tokens, expected_[0]);
  ExpectServingThenCleanStop(*server_);
}

TEST_F(OverloadTest, ClientsThatRetryAllGetThrough) {
  const int clients = Scaled(64, 32);
  std::vector<std::unique_ptr<v1::TokenGeneration::Stub>> stubs;
  for (const auto& channel : channels_) stubs.push_back(v1::TokenGeneration::NewStub(channel));
  std::vector<GenerateCall> calls(clients);
  std::atomic<int> retries{0};
  RunParallel(clients, clients, [&](int i) {
    std::mt19937 jitter(i);
    while (true) {
      calls[i] = RunGenerate(*stubs[i % stubs.size()], requests_[i % kDistinctRequests],
                             absl::Seconds(120));
      if (calls[i].status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) break;
      retries.fetch_add(1);
      absl::SleepFor(absl::Milliseconds(1 + jitter() % 10));
    }
  });
  for (int i = 0; i < clients; ++i) {
    ASSERT_TRUE(calls[i].status.ok()) << i << ": " << StatusText(calls[i].status);
    EXPECT_EQ(calls[i].tokens, expected_[i % kDistinctRequests]) << i;
  }
  EXPECT_GT(retries.load(), 0) << "the clients never found the queue full";
  std::printf("overload with retries: %d clients, %d RESOURCE_EXHAUSTED retries\n", clients,
              retries.load());
  EXPECT_EQ(WaitUntilIdle(*stub_), before_);
}

}  // namespace
}  // namespace int4kv
