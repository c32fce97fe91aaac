#include "tests/reliability/thread_count.h"

#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

TEST(ThreadCountTest, CountsThreadsThisProcessStartsAndEnds) {
  // A first thread may bring a runtime's own along (ThreadSanitizer starts one): start and end
  // one before counting.
  std::thread([] {}).join();
  const absl::StatusOr<int> before = ThreadCount(getpid());
  ASSERT_TRUE(before.ok()) << before.status();
  std::atomic<bool> release{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < 5; ++i) {
    threads.emplace_back([&] {
      while (!release.load()) std::this_thread::yield();
    });
  }
  const absl::StatusOr<int> during = ThreadCount(getpid());
  release = true;
  for (std::thread& thread : threads) thread.join();
  ASSERT_TRUE(during.ok()) << during.status();
  EXPECT_EQ(*during, *before + 5);
  // A joined thread may still be counted for a moment while the kernel lets it go.
  int after = -1;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while ((after = ThreadCount(getpid()).value_or(-1)) != *before && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(after, *before);
}

TEST(ThreadCountTest, AProcessThatDoesNotExistIsNotFound) {
  // Linux pids stay below 2^22 (pid_max's limit).
  EXPECT_EQ(ThreadCount(1 << 23).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace int4kv
