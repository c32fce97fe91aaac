#include "common/thread_pool.h"

#include <system_error>
#include <utility>

namespace int4kv {
namespace {

// True while this thread runs loop bodies: a ParallelFor from inside one runs inline, since
// handing its items to workers busy with the outer loop would mix the two loops' indices, or
// deadlock waiting for a worker that is the caller itself.
thread_local bool in_loop_body = false;

}  // namespace

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  if (threads <= 0) threads = 1;
  for (int i = 1; i < threads; ++i) {
    try {
      workers_.emplace_back([this] { WorkerLoop(); });
    } catch (const std::system_error&) {
      break;  // the system starts no more threads (a process or container limit): run on fewer
    }
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& worker : workers_) worker.join();
}

void ThreadPool::RunItems(absl::FunctionRef<void(int64_t)> body, int64_t items) {
  const bool outer = in_loop_body;
  in_loop_body = true;
  for (int64_t i = next_item_.fetch_add(1); i < items; i = next_item_.fetch_add(1)) {
    try {
      body(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (error_ == nullptr) error_ = std::current_exception();
      next_item_.store(items);  // hand out no more
      break;
    }
  }
  in_loop_body = outer;
}

void ThreadPool::WorkerLoop() {
  int64_t seen_generation = 0;
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    wake_.wait(lock, [&] { return stopping_ || generation_ != seen_generation; });
    if (stopping_) return;
    seen_generation = generation_;
    // A worker that wakes after its loop has finished finds items_ == 0 and stays out, so it
    // never claims an index of a later loop.
    if (items_ == 0) continue;
    const absl::FunctionRef<void(int64_t)>* body = body_;
    const int64_t items = items_;
    ++busy_workers_;
    lock.unlock();
    RunItems(*body, items);
    lock.lock();
    if (--busy_workers_ == 0) done_.notify_all();
  }
}

void ThreadPool::ParallelFor(int64_t n, absl::FunctionRef<void(int64_t)> body) {
  if (n <= 0) return;
  if (workers_.empty() || n == 1 || in_loop_body) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    body_ = &body;
    items_ = n;
    next_item_.store(0);
    ++generation_;
  }
  wake_.notify_all();
  RunItems(body, n);
  std::unique_lock<std::mutex> lock(mutex_);
  // Every item has been claimed once RunItems returns here; wait for the workers still
  // running theirs. A worker that wakes late finds no items left and leaves at once.
  done_.wait(lock, [&] { return busy_workers_ == 0; });
  body_ = nullptr;
  items_ = 0;
  if (error_ != nullptr) {
    const std::exception_ptr error = std::exchange(error_, nullptr);
    lock.unlock();
    std::rethrow_exception(error);
  }
}

}  // namespace int4kv
