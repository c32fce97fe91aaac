// A small fixed-size pool for data-parallel loops on the CPU path.
//
// Thread ownership: ParallelFor is called from one thread at a time (the pool's owner); the
// workers only run the loop bodies it hands them. A ParallelFor called from inside a loop body
// (of this pool or another) runs its items inline on that thread.
#ifndef INT4KV_COMMON_THREAD_POOL_H_
#define INT4KV_COMMON_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"

namespace int4kv {

class ThreadPool {
 public:
  // `threads` workers in total, counting the caller of ParallelFor; 0 means one per
  // hardware thread. Fewer where the system refuses to start more threads (size() tells):
  // the loops still run, on the threads there are.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Calls body(i) for every i in [0, n), spread over the workers; returns when all are done.
  // Allocates nothing: `body` is referenced, not copied, for the duration of the call. If a
  // body throws, no further items are handed out, the running ones finish, and the first
  // exception is rethrown here.
  void ParallelFor(int64_t n, absl::FunctionRef<void(int64_t)> body);

  int size() const { return static_cast<int>(workers_.size()) + 1; }

 private:
  void WorkerLoop();
  void RunItems(absl::FunctionRef<void(int64_t)> body, int64_t items);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  // The running loop's body, owned by ParallelFor's caller; guarded by mutex_.
  const absl::FunctionRef<void(int64_t)>* body_ = nullptr;
  int64_t items_ = 0;       // guarded by mutex_
  int64_t generation_ = 0;  // guarded by mutex_
  int busy_workers_ = 0;    // guarded by mutex_
  std::exception_ptr error_;  // the running loop's first exception; guarded by mutex_
  bool stopping_ = false;   // guarded by mutex_
  std::atomic<int64_t> next_item_{0};
};

}  // namespace int4kv

#endif  // INT4KV_COMMON_THREAD_POOL_H_
