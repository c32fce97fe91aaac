#include "server/testing/step_gate.h"

#include "server/testing/test_util.h"

namespace int4kv {

StepGate::Hold StepGate::HoldAfter(int64_t calls) {
  std::lock_guard<std::mutex> lock(mutex_);
  hold_from_ = calls_ + calls;
  held_ = false;  // a call waiting now is let go (calls_ < hold_from_) and is held no more
  changed_.notify_all();
  return Hold(this);
}

void StepGate::Release() {
  std::lock_guard<std::mutex> lock(mutex_);
  hold_from_ = std::numeric_limits<int64_t>::max();
  changed_.notify_all();
}

bool StepGate::WaitUntilHeld(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  return changed_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] { return held_; });
}

void StepGate::Pass() {
  std::unique_lock<std::mutex> lock(mutex_);
  ++calls_;
  if (calls_ < hold_from_) return;
  held_ = true;
  changed_.notify_all();
  changed_.wait(lock, [&] { return calls_ < hold_from_; });
  held_ = false;
}

KvAttentionFactory StepGate::AttentionFactory() {
  return FailingInt4AttentionFactory([this] {
    Pass();
    return false;
  });
}

}  // namespace int4kv
