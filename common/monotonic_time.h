// Time for measuring durations and bounding waits, which a change of the system clock cannot
// bend: absl::Time values read from the steady clock. Only their differences mean anything;
// they are not dates.
#ifndef INT4KV_COMMON_MONOTONIC_TIME_H_
#define INT4KV_COMMON_MONOTONIC_TIME_H_

#include <chrono>

#include "absl/time/time.h"

namespace int4kv {

inline absl::Time MonotonicNow() {
  return absl::UnixEpoch() + absl::FromChrono(std::chrono::steady_clock::now().time_since_epoch());
}

}  // namespace int4kv

#endif  // INT4KV_COMMON_MONOTONIC_TIME_H_
