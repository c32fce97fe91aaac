#include "tools/stream_call.h"

#include <vector>

#include "gtest/gtest.h"

namespace int4kv {
namespace {

// The first token-carrying response sets the time to first token and gives its other tokens
// gaps of 0; each later one shares the time since the previous one among its tokens, so
// there is one sample for every token after the first.
TEST(CallOutcomeTest, InterTokenSamplesShareEachGapAmongItsTokens) {
  CallOutcome outcome;
  outcome.start = absl::UnixEpoch();
  outcome.AddTokenArrival(outcome.start + absl::Milliseconds(10), 3);
  outcome.AddTokenArrival(outcome.start + absl::Milliseconds(16), 1);
  outcome.AddTokenArrival(outcome.start + absl::Milliseconds(24), 4);
  EXPECT_TRUE(outcome.got_token);
  EXPECT_EQ(outcome.time_to_first_token, absl::Milliseconds(10));
  EXPECT_EQ(outcome.inter_token_ms, (std::vector<double>{0, 0, 6, 2, 2, 2, 2}));
  EXPECT_EQ(outcome.tokens, 8);
  EXPECT_EQ(outcome.last_token_arrival, outcome.start + absl::Milliseconds(24));
}

TEST(CallOutcomeTest, OneTokenAtATime) {
  CallOutcome outcome;
  outcome.start = absl::UnixEpoch();
  outcome.AddTokenArrival(outcome.start + absl::Microseconds(1500), 1);
  outcome.AddTokenArrival(outcome.start + absl::Microseconds(2000), 1);
  EXPECT_EQ(outcome.time_to_first_token, absl::Microseconds(1500));
  EXPECT_EQ(outcome.inter_token_ms, (std::vector<double>{0.5}));
  EXPECT_EQ(outcome.tokens, 2);
}

}  // namespace
}  // namespace int4kv
