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
  outcome.start = absl::FromUnixSeconds(1000);  // not the default time
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
  outcome.start = absl::FromUnixSeconds(1000);  // not the default time
  outcome.AddTokenArrival(outcome.start + absl::Microseconds(1500), 1);
  outcome.AddTokenArrival(outcome.start + absl::Microseconds(2000), 1);
  EXPECT_EQ(outcome.time_to_first_token, absl::Microseconds(1500));
  EXPECT_EQ(outcome.inter_token_ms, (std::vector<double>{0.5}));
  EXPECT_EQ(outcome.tokens, 2);
}

// A whole response: ids checked against the vocabulary at both ends, the finish and usage
// taken from the response that carries them.
TEST(CallOutcomeTest, ResponsesCheckIdsAndRecordTheFinish) {
  CallOutcome outcome;
  outcome.start = absl::FromUnixSeconds(1000);
  v1::GenerateResponse tokens;
  tokens.add_token_ids(0);
  tokens.add_token_ids(511);
  outcome.AddResponse(tokens, outcome.start + absl::Milliseconds(3), 512);
  EXPECT_TRUE(outcome.ids_in_range);
  EXPECT_EQ(outcome.tokens, 2);
  EXPECT_EQ(outcome.finish_reason, v1::FINISH_REASON_UNSPECIFIED);
  EXPECT_EQ(outcome.usage_generated_tokens, -1);
  v1::GenerateResponse last;
  last.add_token_ids(512);  // one past the vocabulary
  last.set_finish_reason(v1::FINISH_REASON_LENGTH);
  last.mutable_usage()->set_generated_tokens(3);
  outcome.AddResponse(last, outcome.start + absl::Milliseconds(5), 512);
  EXPECT_FALSE(outcome.ids_in_range);
  EXPECT_EQ(outcome.tokens, 3);
  EXPECT_EQ(outcome.finish_reason, v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(outcome.usage_generated_tokens, 3);
  CallOutcome negative;
  v1::GenerateResponse below;
  below.add_token_ids(-1);
  negative.AddResponse(below, absl::FromUnixSeconds(1), 512);
  EXPECT_FALSE(negative.ids_in_range);
}

}  // namespace
}  // namespace int4kv
