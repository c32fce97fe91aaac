#include "tests/reliability/thread_count.h"

#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace int4kv {
namespace {

TEST(ThreadCountTest, CountsThreadsThisProcessStartsAndEnds) {
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
  const absl::StatusOr<int> after = ThreadCount(getpid());
  ASSERT_TRUE(during.ok()) << during.status();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(*during, *before + 5);
  EXPECT_EQ(*after, *before);
}

TEST(ThreadCountTest, AProcessThatDoesNotExistIsNotFound) {
  // Linux pids stay below 2^22 (pid_max's limit).
  EXPECT_EQ(ThreadCount(1 << 23).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace int4kv
