// Watches many in-flight calls for cancellation from one thread, so that the threads serving
// them can block on their work instead of each polling on a timer. Every `interval` the
// watcher asks each registered call's `is_cancelled` and, the first time it answers true, runs
// that call's `on_cancel` (on the watcher's thread) and stops watching it.
//
// The service registers each Generate call with `ServerContext::IsCancelled` (thread-safe in
// gRPC's sync API) and an `on_cancel` that cancels the engine request; the engine then
// finishes the request's stream, which wakes the handler. With hundreds of streams this costs
// one thread's sweep instead of hundreds of timed wake-ups.
//
// Thread ownership: Watch and Unwatch may be called from any thread. The callbacks run on the
// watcher's thread while it holds its lock, so they must be short and must not call Watch or
// Unwatch. After Unwatch returns, that call's callbacks are not running and never run again.
#ifndef INT4KV_SERVER_CANCEL_WATCHER_H_
#define INT4KV_SERVER_CANCEL_WATCHER_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "absl/time/time.h"

namespace int4kv {

class CancelWatcher {
 public:
  explicit CancelWatcher(absl::Duration interval);
  ~CancelWatcher();  // stops the thread; registered calls are dropped without callbacks
  CancelWatcher(const CancelWatcher&) = delete;
  CancelWatcher& operator=(const CancelWatcher&) = delete;

  // Starts watching a call; returns the key for Unwatch.
  uint64_t Watch(std::function<bool()> is_cancelled, std::function<void()> on_cancel);
  // Stops watching `key` (a no-op once its on_cancel has run).
  void Unwatch(uint64_t key);

  // Calls watched now (for tests and diagnostics).
  size_t watched() const;

 private:
  struct Call {
    std::function<bool()> is_cancelled;
    std::function<void()> on_cancel;
  };

  void Loop();

  const absl::Duration interval_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;    // stopping, or the first call to watch
  std::map<uint64_t, Call> calls_;  // guarded by mutex_
  uint64_t next_key_ = 1;           // guarded by mutex_
  bool stopping_ = false;           // guarded by mutex_
  std::thread thread_;              // last: starts after the fields above exist
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_CANCEL_WATCHER_H_
