#include "server/cancel_watcher.h"

#include <utility>

namespace int4kv {

CancelWatcher::CancelWatcher(absl::Duration interval)
    : interval_(interval), thread_([this] { Loop(); }) {}

CancelWatcher::~CancelWatcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

uint64_t CancelWatcher::Watch(std::function<bool()> is_cancelled, std::function<void()> on_cancel) {
  uint64_t key;
  bool first;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    key = next_key_++;
    first = calls_.empty();
    calls_.emplace(key, Call{std::move(is_cancelled), std::move(on_cancel)});
  }
  if (first) wake_.notify_all();
  return key;
}

void CancelWatcher::Unwatch(uint64_t key) {
  std::lock_guard<std::mutex> lock(mutex_);
  calls_.erase(key);
}

size_t CancelWatcher::watched() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return calls_.size();
}

void CancelWatcher::Loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    // Asleep while nothing is watched; then one sweep every interval.
    wake_.wait(lock, [&] { return stopping_ || !calls_.empty(); });
    if (wake_.wait_for(lock, absl::ToChronoNanoseconds(interval_), [&] { return stopping_; })) {
      return;
    }
    for (auto it = calls_.begin(); it != calls_.end();) {
      if (it->second.is_cancelled()) {
        it->second.on_cancel();
        it = calls_.erase(it);
      } else {
        ++it;
      }
    }
  }
}

}  // namespace int4kv
