// StepGate: a test's hold on an engine's scheduler thread, inside an attention call.
#ifndef INT4KV_SERVER_TESTING_STEP_GATE_H_
#define INT4KV_SERVER_TESTING_STEP_GATE_H_

#include <condition_variable>
#include <cstdint>
#include <limits>
#include <mutex>

#include "absl/time/time.h"
#include "server/scheduler.h"

namespace int4kv {

// Holds an engine's scheduler thread inside an attention call, so that a test sees the
// engine mid-request by cause rather than by timing: requests admitted, tokens of the steps
// before the held one already out, the held step not done. AttentionFactory() gives the
// engine an INT4 attention whose calls pass through the gate; the gate must outlive the
// engine. Thread-safe.
class StepGate {
 public:
  // Releases the gate when it goes out of scope, so that a test that stops early (a failed
  // ASSERT) does not leave the engine's shutdown waiting at the gate. Declare it after the
  // engine, so that it goes first.
  class [[nodiscard]] Hold {
   public:
    explicit Hold(StepGate* gate) : gate_(gate) {}
    ~Hold() { gate_->Release(); }
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;

   private:
    StepGate* gate_;
  };

  // The attention call `calls` after the ones made so far, and every later one, waits until
  // Release or the end of the returned Hold (HoldAfter(1): the next call). Called while a
  // call waits at the gate, it lets that call go on, and WaitUntilHeld then waits for the
  // newly held one.
  Hold HoldAfter(int64_t calls);
  void Release();
  // Until a call waits at the gate; false if none does within `timeout`.
  bool WaitUntilHeld(absl::Duration timeout);
  KvAttentionFactory AttentionFactory();

 private:
  void Pass();  // called by the attention, on the scheduler thread

  std::mutex mutex_;
  std::condition_variable changed_;
  int64_t calls_ = 0;                                        // attention calls so far
  int64_t hold_from_ = std::numeric_limits<int64_t>::max();  // first call that waits
  bool held_ = false;                                        // a call waits now
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_TESTING_STEP_GATE_H_
