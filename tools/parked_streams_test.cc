// ParkedStreams: which refused streams may send again, and when.
#include "tools/parked_streams.h"

#include "gtest/gtest.h"

namespace int4kv {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1000);
const absl::Duration kRetry = absl::Milliseconds(100);

TEST(ParkedStreamsTest, EachFinishedRequestReleasesOneParkedStream) {
  ParkedStreams parked(kRetry);
  for (int i = 0; i < 3; ++i) parked.Park(kStart + absl::Milliseconds(i));
  EXPECT_EQ(parked.size(), 3);
  parked.RequestFinished();
  EXPECT_EQ(parked.size(), 2);
  // The longest parked went first: the next to retry is the one parked at 1 ms.
  EXPECT_EQ(parked.NextRetry(), kStart + absl::Milliseconds(1) + kRetry);
  parked.RequestFinished();
  parked.RequestFinished();
  EXPECT_EQ(parked.size(), 0);
  parked.RequestFinished();  // nobody parked: nothing to release
  EXPECT_EQ(parked.size(), 0);
}

TEST(ParkedStreamsTest, WithRequestsInFlightParkedStreamsWaitForOneToFinish) {
  ParkedStreams parked(kRetry);
  parked.Park(kStart);
  parked.ReleaseExpired(kStart + absl::Seconds(10), /*in_flight=*/1);
  EXPECT_EQ(parked.size(), 1);
}

TEST(ParkedStreamsTest, WithNothingInFlightStreamsSendAgainAfterTheRetryTime) {
  ParkedStreams parked(kRetry);
  EXPECT_EQ(parked.NextRetry(), absl::InfiniteFuture());
  parked.Park(kStart);
  parked.Park(kStart + absl::Milliseconds(30));
  EXPECT_EQ(parked.NextRetry(), kStart + kRetry);
  parked.ReleaseExpired(kStart + kRetry - absl::Nanoseconds(1), 0);
  EXPECT_EQ(parked.size(), 2);
  parked.ReleaseExpired(kStart + kRetry, 0);  // the first has waited the retry time
  EXPECT_EQ(parked.size(), 1);
  EXPECT_EQ(parked.NextRetry(), kStart + absl::Milliseconds(130));
  parked.ReleaseExpired(kStart + absl::Milliseconds(130), 0);
  EXPECT_EQ(parked.size(), 0);
}

}  // namespace
}  // namespace int4kv
