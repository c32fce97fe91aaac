// KV pressure: a server whose KV cache holds about 300 token slots (--kv_cache_size=72000,
// at 240 bytes per token for stories260K) receives, all at once, requests needing at least five
// times that (about 12x; about 6x in sanitizer builds, which send half as many requests). They wait
// in the queue for slots and all complete, with exactly the greedy tokens an idle server with a
// full-size cache gives them; a second round, in another order, over slots that earlier requests
// used, gives the same tokens again. While it runs, GetServerInfo's counts agree with each other:
// never more than max_batch requests running, and never fewer slots in use than the running
// requests reserve (each at least the smallest request's prompt plus max_new_tokens).
#include <algorithm>
#include <atomic>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/reliability/reliability_testing.h"
#include "tests/testing/generate_call.h"

namespace int4kv {
namespace {

// Polls GetServerInfo until stopped, keeping the extremes (its own thread).
class CapacityMonitor {
 public:
  // smallest_request: slots the smallest request reserves while it runs.
  CapacityMonitor(std::shared_ptr<grpc::Channel> channel, int64_t smallest_request)
      : stub_(v1::TokenGeneration::NewStub(channel)),
        smallest_request_(smallest_request),
        thread_([this] { Loop(); }) {}
  ~CapacityMonitor() { Stop(); }

  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  int32_t max_queued() const { return max_queued_; }
  int32_t max_running() const { return max_running_; }
  int64_t min_free() const { return min_free_; }
  int64_t bad_counts() const { return bad_counts_; }

 private:
  void Loop() {
    while (!stop_) {
      const CapacityCounts c = CapacityCounts::From(GetInfo(*stub_));
      max_queued_ = std::max(max_queued_.load(), c.queued);
      max_running_ = std::max(max_running_.load(), c.running);
      min_free_ = std::min(min_free_.load(), c.slots_free);
      const int64_t in_use = c.slots_total - c.slots_free;
      if (c.running > c.max_batch || in_use < c.running * smallest_request_) {
        ++bad_counts_;
      }
      absl::SleepFor(absl::Milliseconds(2));
    }
  }

  std::unique_ptr<v1::TokenGeneration::Stub> stub_;
  const int64_t smallest_request_;
  std::atomic<bool> stop_{false};
  std::atomic<int32_t> max_queued_{0};
  std::atomic<int32_t> max_running_{0};
  std::atomic<int64_t> min_free_{INT64_MAX};
  std::atomic<int64_t> bad_counts_{0};
  std::thread thread_;  // last: starts after the fields above exist
};

TEST(KvPressureTest, RequestsWaitForSlotsAndAllCompleteUncorrupted) {
  const int count = Scaled(32, 16);
  std::mt19937_64 rng(31);
  std::vector<v1::GenerateRequest> requests;
  int64_t demand = 0;
  int64_t largest = 0;  // slots of the largest request
  int64_t smallest = 1 << 30;
  for (int i = 0; i < count; ++i) {
    requests.push_back(RandomGreedyRequest(rng, 512, 16 + static_cast<int32_t>(rng() % 81),
                                           32 + static_cast<int32_t>(rng() % 65)));
    const int64_t need = requests.back().prompt_size() + requests.back().max_new_tokens();
    demand += need;
    largest = std::max(largest, need);
    smallest = std::min(smallest, need);
  }

  // The reference: the same requests one at a time on an idle server with a full cache.
  std::vector<std::vector<int32_t>> expected;
  {
    absl::StatusOr<std::unique_ptr<ServerProcess>> idle = StartServing({"--log_level=warn"});
    ASSERT_TRUE(idle.ok()) << idle.status();
    auto stub = v1::TokenGeneration::NewStub((*idle)->Channel());
    expected = IdleOutputs(*stub, requests);
  }

  absl::StatusOr<std::unique_ptr<ServerProcess>> server = StartServing(
      {"--kv_cache_size=72000", "--max_batch=8", "--max_queue=64", "--log_level=warn"});
  ASSERT_TRUE(server.ok()) << server.status();
  const auto channels = OpenChannels((*server)->address(), 4);
  auto stub = v1::TokenGeneration::NewStub(channels[0]);
  const CapacityCounts before = WaitUntilIdle(*stub);
  ASSERT_TRUE(before.idle()) << before;
  ASSERT_LE(before.slots_total, 300);
  ASSERT_GE(demand, 5 * before.slots_total) << "the demand must far exceed the cache";
  std::printf("kv pressure: %d requests need %lld slots, the cache has %lld\n", count,
              static_cast<long long>(demand), static_cast<long long>(before.slots_total));

  std::vector<std::unique_ptr<v1::TokenGeneration::Stub>> stubs;
  for (const auto& channel : channels) stubs.push_back(v1::TokenGeneration::NewStub(channel));
  for (int round = 0; round < 2; ++round) {
    std::vector<int> order(count);
    for (int i = 0; i < count; ++i) order[i] = round == 0 ? i : count - 1 - i;
    CapacityMonitor monitor(channels[1], smallest);
    std::vector<GenerateCall> calls(count);
    RunParallel(count, count, [&](int k) {
      calls[k] = RunGenerate(*stubs[k % stubs.size()], requests[order[k]], absl::Seconds(300));
    });
    monitor.Stop();
    for (int k = 0; k < count; ++k) {
      const int r = order[k];
      ASSERT_TRUE(calls[k].status.ok())
          << "round " << round << " request " << r << ": " << StatusText(calls[k].status);
      EXPECT_EQ(calls[k].tokens, expected[r]) << "round " << round << " request " << r;
      EXPECT_EQ(calls[k].last().finish_reason(), v1::FINISH_REASON_LENGTH);
    }
    EXPECT_GT(monitor.max_queued(), 0) << "no request ever waited for slots";
    EXPECT_LT(monitor.max_running(), 8) << "the cache should have limited the batch";
    // The queue formed because the cache was full, not because admission held slots back:
    // at some point fewer slots were free than the largest request needs.
    EXPECT_LT(monitor.min_free(), largest) << "the cache never filled";
    EXPECT_EQ(monitor.bad_counts(), 0);
    std::printf("round %d: at most %d queued, %d running, %lld slots free at the lowest\n", round,
                monitor.max_queued(), monitor.max_running(),
                static_cast<long long>(monitor.min_free()));
    EXPECT_EQ(WaitUntilIdle(*stub), before);
  }
  ExpectServingThenCleanStop(**server);
}

}  // namespace
}  // namespace int4kv
