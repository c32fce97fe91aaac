#include "common/thread_pool.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace int4kv {
namespace {

TEST(ThreadPoolTest, EveryIndexRunsOnceForAnyThreadCount) {
  for (int threads : {1, 2, 4, 16}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {0, 1, 7, 1000}) {
      std::vector<std::atomic<int>> runs(n);
      pool.ParallelFor(n, [&](int64_t i) { runs[i].fetch_add(1); });
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(runs[i].load(), 1) << "threads " << threads << " n " << n << " index " << i;
      }
    }
  }
}

// A body that throws (a sampler's allocation, say) ends the loop with that exception once the
// running items are done, and the pool is whole afterwards: no worker calls the dead body.
TEST(ThreadPoolTest, AThrowingBodyEndsTheLoopAndIsRethrown) {
  ThreadPool pool(4);
  for (int round = 0; round < 5; ++round) {
    // 1000 items of 1 ms: a loop that went on after item 11 threw would start all of them.
    std::atomic<int> started{0};
    EXPECT_THROW(pool.ParallelFor(1000,
                                  [&](int64_t i) {
                                    started.fetch_add(1);
                                    if (i == 11) throw std::runtime_error("item 11");
                                    std::this_thread::sleep_for(std::chrono::milliseconds(1));
                                  }),
                 std::runtime_error);
    EXPECT_LT(started.load(), 500) << "items were still handed out after the throw";
    std::vector<std::atomic<int>> runs(500);
    pool.ParallelFor(500, [&](int64_t i) { runs[i].fetch_add(1); });
    for (int64_t i = 0; i < 500; ++i) ASSERT_EQ(runs[i].load(), 1) << "round " << round;
  }
}

// A ParallelFor inside a loop body, on the owner's thread or a worker's, runs its items inline:
// every index of both loops exactly once, and no deadlock.
TEST(ThreadPoolTest, NestedLoopsRunEveryIndexOnce) {
  ThreadPool pool(4);
  constexpr int kOuter = 64, kInner = 16;
  std::vector<std::atomic<int>> runs(kOuter * kInner);
  pool.ParallelFor(kOuter, [&](int64_t o) {
    pool.ParallelFor(kInner, [&](int64_t i) { runs[o * kInner + i].fetch_add(1); });
  });
  for (int k = 0; k < kOuter * kInner; ++k) ASSERT_EQ(runs[k].load(), 1) << "item " << k;
}

// A process or container limit on threads makes std::thread throw; the pool then runs on the
// threads it could start instead of terminating the process. The limit is set in a child
// process, as an unprivileged user (root ignores RLIMIT_NPROC).
TEST(ThreadPoolTest, RunsOnFewerThreadsWhenTheSystemStartsNoMore) {
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (geteuid() == 0 && setuid(65534) != 0) _exit(77);
    const rlimit limit = {8, 8};
    if (setrlimit(RLIMIT_NPROC, &limit) != 0) _exit(77);
    ThreadPool pool(64);
    std::atomic<int64_t> sum{0};
    pool.ParallelFor(100, [&](int64_t i) { sum.fetch_add(i); });
    _exit(pool.size() >= 1 && pool.size() < 64 && sum.load() == 4950 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 77) GTEST_SKIP() << "cannot limit threads here";
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace int4kv
