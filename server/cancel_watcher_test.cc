#include "server/cancel_watcher.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

// Polls `done` for up to `limit`.
bool WaitUntil(const std::function<bool()>& done, absl::Duration limit) {
  const absl::Time deadline = absl::Now() + limit;
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

// A call that is never cancelled and counts how often the watcher asks it. Once it has been
// asked twice after some moment, at least one whole sweep began after that moment, so every
// call watched then has been asked too: "nothing happened" is checked over real sweeps, not
// over a sleep the watcher's thread may not have run in. It stops being watched when it is
// destroyed, so the watcher's thread never reads a counter that is gone.
class SweepCounter {
 public:
  explicit SweepCounter(CancelWatcher& watcher)
      : watcher_(watcher),
        key_(watcher.Watch(
            [this] {
              ++asked_;
              return false;
            },
            [] {})) {}
  ~SweepCounter() { watcher_.Unwatch(key_); }
  SweepCounter(const SweepCounter&) = delete;
  SweepCounter& operator=(const SweepCounter&) = delete;

  // Waits (up to 10 s) until two sweeps have begun after this call.
  bool WaitForTwoMoreSweeps() {
    const int64_t now = asked_.load();
    return WaitUntil([&] { return asked_.load() >= now + 2; }, absl::Seconds(10));
  }

 private:
  std::atomic<int64_t> asked_{0};  // before key_: the watcher may ask as soon as Watch returns
  CancelWatcher& watcher_;
  const uint64_t key_;
};

TEST(CancelWatcherTest, CallsOnCancelOnceWhenTheCallIsCancelled) {
  CancelWatcher watcher(absl::Milliseconds(1));
  std::atomic<bool> cancelled{false};
  std::atomic<int> calls{0};
  watcher.Watch([&] { return cancelled.load(); }, [&] { ++calls; });
  SweepCounter sweeps(watcher);
  ASSERT_TRUE(sweeps.WaitForTwoMoreSweeps());
  EXPECT_EQ(calls.load(), 0) << "on_cancel ran for a call that was not cancelled";
  EXPECT_EQ(watcher.watched(), 2u);
  cancelled = true;
  ASSERT_TRUE(WaitUntil([&] { return calls.load() > 0; }, absl::Seconds(10)));
  ASSERT_TRUE(sweeps.WaitForTwoMoreSweeps());
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(watcher.watched(), 1u);  // the sweep counter alone
}

// The first call watched wakes the sweeping thread by itself: a lone call whose client is
// gone is seen with nothing else watched.
TEST(CancelWatcherTest, ALoneCallIsSeen) {
  CancelWatcher watcher(absl::Milliseconds(1));
  std::atomic<int> cancelled{0};
  const uint64_t key = watcher.Watch([] { return true; }, [&cancelled] { ++cancelled; });
  EXPECT_TRUE(WaitUntil([&] { return cancelled.load() == 1; }, absl::Seconds(10)));
  watcher.Unwatch(key);
}

TEST(CancelWatcherTest, OnlyTheCancelledCallsAreReported) {
  constexpr int kCalls = 200;
  // Declared before the watcher, so that they outlive it: the calls never cancelled are still
  // watched when the test ends, and the watcher's thread reads their flags until it stops.
  std::vector<std::unique_ptr<std::atomic<bool>>> cancelled;
  std::vector<std::unique_ptr<std::atomic<int>>> reported;
  CancelWatcher watcher(absl::Milliseconds(1));
  for (int i = 0; i < kCalls; ++i) {
    cancelled.push_back(std::make_unique<std::atomic<bool>>(false));
    reported.push_back(std::make_unique<std::atomic<int>>(0));
    std::atomic<bool>* flag = cancelled.back().get();
    std::atomic<int>* count = reported.back().get();
    watcher.Watch([flag] { return flag->load(); }, [count] { ++*count; });
  }
  for (int i = 0; i < kCalls; i += 3) *cancelled[i] = true;
  ASSERT_TRUE(
      WaitUntil([&] { return watcher.watched() == kCalls - (kCalls + 2) / 3; }, absl::Seconds(10)));
  for (int i = 0; i < kCalls; ++i) EXPECT_EQ(reported[i]->load(), i % 3 == 0 ? 1 : 0) << i;
}

TEST(CancelWatcherTest, NoCallbackAfterUnwatchReturns) {
  CancelWatcher watcher(absl::Milliseconds(1));
  std::atomic<bool> cancelled{false};
  std::atomic<int> calls{0};
  const uint64_t key = watcher.Watch([&] { return cancelled.load(); }, [&] { ++calls; });
  SweepCounter sweeps(watcher);
  watcher.Unwatch(key);
  cancelled = true;
  ASSERT_TRUE(sweeps.WaitForTwoMoreSweeps());
  EXPECT_EQ(calls.load(), 0);
  EXPECT_EQ(watcher.watched(), 1u);  // the sweep counter alone
  watcher.Unwatch(key);  // a second Unwatch is harmless
  EXPECT_EQ(watcher.watched(), 1u);
}

TEST(CancelWatcherTest, UnwatchWaitsForARunningCallback) {
  CancelWatcher watcher(absl::Milliseconds(1));
  absl::Notification entered;
  std::atomic<bool> finished{false};
  const uint64_t key = watcher.Watch([] { return true; },
                                     [&] {
                                       entered.Notify();
                                       absl::SleepFor(absl::Milliseconds(50));
                                       finished = true;
                                     });
  entered.WaitForNotification();
  watcher.Unwatch(key);
  EXPECT_TRUE(finished.load()) << "Unwatch returned while on_cancel was still running";
}

TEST(CancelWatcherTest, DestructionDropsWatchedCallsWithoutCallbacks) {
  std::atomic<int> calls{0};
  {
    CancelWatcher watcher(absl::Hours(1));
    watcher.Watch([] { return true; }, [&] { ++calls; });
  }
  EXPECT_EQ(calls.load(), 0);
}

}  // namespace
}  // namespace int4kv
