// The load generator's closed loop: the streams whose last request the server refused for want
// of room (RESOURCE_EXHAUSTED). A parked stream sends again when a request that was not
// refused finishes (its room goes to the longest parked), or, with no request in flight
// whose end would free room, once it has waited `retry_after`. Without parking, a refused
// stream would resend at once and flood the server with requests it cannot take.
//
// Thread ownership: the load generator's driver thread only. Times are MonotonicNow() readings.
#ifndef INT4KV_TOOLS_PARKED_STREAMS_H_
#define INT4KV_TOOLS_PARKED_STREAMS_H_

#include <cstdint>
#include <deque>

#include "absl/time/time.h"

namespace int4kv {

class ParkedStreams {
 public:
  explicit ParkedStreams(absl::Duration retry_after) : retry_after_(retry_after) {}

  // A stream's request was refused at `now`: the stream waits.
  void Park(absl::Time now) { parked_since_.push_back(now); }
  // A request that was not refused finished: the longest parked stream may send again.
  void RequestFinished();
  // With `in_flight` requests outstanding: when none is, every stream parked for at least
  // retry_after may send again.
  void ReleaseExpired(absl::Time now, int32_t in_flight);
  // When ReleaseExpired with nothing in flight releases the next stream; InfiniteFuture if
  // none is parked.
  absl::Time NextRetry() const;

  int32_t size() const { return static_cast<int32_t>(parked_since_.size()); }

 private:
  const absl::Duration retry_after_;
  std::deque<absl::Time> parked_since_;  // oldest first, by when each was refused
};

}  // namespace int4kv

#endif  // INT4KV_TOOLS_PARKED_STREAMS_H_
