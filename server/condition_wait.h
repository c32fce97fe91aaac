// WaitFor: std::condition_variable::wait_for with an absl::Duration that may be infinite.
// wait_for adds the timeout to now(), so an infinite timeout (or one of centuries) overflows
// the clock and the wait ends at once; WaitFor waits without a limit for those instead.
#ifndef INT4KV_SERVER_CONDITION_WAIT_H_
#define INT4KV_SERVER_CONDITION_WAIT_H_

#include <condition_variable>
#include <mutex>

#include "absl/time/time.h"

namespace int4kv {

// Timeouts at or above this wait without a limit: far below where now() + timeout overflows
// the steady clock's 64-bit nanoseconds (about 292 years), far above any real wait.
inline constexpr absl::Duration kLongestTimedWait = absl::Hours(24 * 365);

// Waits on `cv` (with `lock` held) until `done()` is true or `timeout` has passed; returns
// done(). A timeout <= 0 only checks done().
template <typename Predicate>
bool WaitFor(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
             absl::Duration timeout, Predicate done) {
  if (timeout >= kLongestTimedWait) {
    cv.wait(lock, done);
    return true;
  }
  return cv.wait_for(lock, absl::ToChronoNanoseconds(timeout), done);
}

}  // namespace int4kv

#endif  // INT4KV_SERVER_CONDITION_WAIT_H_
