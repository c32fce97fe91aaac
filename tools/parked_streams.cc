#include "tools/parked_streams.h"

namespace int4kv {

void ParkedStreams::RequestFinished() {
  if (!parked_since_.empty()) parked_since_.pop_front();
}

void ParkedStreams::ReleaseExpired(absl::Time now, int32_t in_flight) {
  if (in_flight > 0) return;
  while (!parked_since_.empty() && now - parked_since_.front() >= retry_after_) {
    parked_since_.pop_front();
  }
}

absl::Time ParkedStreams::NextRetry() const {
  return parked_since_.empty() ? absl::InfiniteFuture() : parked_since_.front() + retry_after_;
}

}  // namespace int4kv
