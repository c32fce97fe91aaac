#include "tools/load_stats.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;

CallOutcome GoodOutcome() {
  CallOutcome o;
  o.start = absl::UnixEpoch();
  o.end = o.start + absl::Milliseconds(40);
  o.got_token = true;
  o.time_to_first_token = absl::Milliseconds(10);
  o.inter_token_ms = {10, 10, 10};
  o.tokens = 4;
  o.max_new_tokens = 4;
  o.ignore_eos = true;
  o.finish_reason = v1::FINISH_REASON_LENGTH;
  o.usage_generated_tokens = 4;
  return o;
}

TEST(LoadStatsTest, GoodStreamsPassTheChecks) {
  EXPECT_EQ(CheckOkOutcome(GoodOutcome()), "");
  CallOutcome stopped = GoodOutcome();
  stopped.finish_reason = v1::FINISH_REASON_STOP;
  stopped.tokens = stopped.usage_generated_tokens = 2;
  EXPECT_EQ(CheckOkOutcome(stopped), "");
  // EOS is a good finish for a request that did not ignore it.
  CallOutcome eos = stopped;
  eos.ignore_eos = false;
  eos.finish_reason = v1::FINISH_REASON_EOS;
  EXPECT_EQ(CheckOkOutcome(eos), "");
}

// An OK request that got no token (it stopped on its first, say, with no token streamed)
// adds no time-to-first-token sample: a zero would pull the percentiles down.
TEST(LoadStatsTest, RequestsWithoutATokenAddNoFirstTokenTime) {
  LoadStats stats;
  stats.Record(GoodOutcome());
  CallOutcome none = GoodOutcome();
  none.got_token = false;
  none.time_to_first_token = absl::ZeroDuration();
  none.inter_token_ms.clear();
  none.tokens = none.usage_generated_tokens = 0;
  none.finish_reason = v1::FINISH_REASON_STOP;
  stats.Record(none);
  const LoadgenResult result = stats.Summarize();
  EXPECT_EQ(result.ok, 2);
  EXPECT_EQ(result.time_to_first_token.count, 1);
  EXPECT_DOUBLE_EQ(result.time_to_first_token.p50_ms, 10);
  EXPECT_EQ(result.end_to_end.count, 2);
}

TEST(LoadStatsTest, BrokenPromisesAreNamed) {
  CallOutcome o = GoodOutcome();
  o.finish_reason = v1::FINISH_REASON_UNSPECIFIED;
  EXPECT_THAT(CheckOkOutcome(o), HasSubstr("finish reason"));
  o = GoodOutcome();
  o.usage_generated_tokens = 3;
  EXPECT_THAT(CheckOkOutcome(o), HasSubstr("usage.generated_tokens = 3 but 4"));
  o = GoodOutcome();
  o.tokens = o.usage_generated_tokens = 5;
  EXPECT_THAT(CheckOkOutcome(o), HasSubstr("5 tokens streamed for max_new_tokens = 4"));
  o = GoodOutcome();
  o.tokens = o.usage_generated_tokens = 3;
  EXPECT_THAT(CheckOkOutcome(o), HasSubstr("LENGTH after 3"));
  o = GoodOutcome();
  o.finish_reason = v1::FINISH_REASON_EOS;
  EXPECT_THAT(CheckOkOutcome(o), HasSubstr("ignore_eos"));
  o = GoodOutcome();
  o.ids_in_range = false;
  EXPECT_THAT(CheckOkOutcome(o), HasSubstr("vocab_size"));
}

TEST(LoadStatsTest, CountsLatenciesAndErrorsByCode) {
  LoadStats stats;
  stats.Record(GoodOutcome());
  stats.Record(GoodOutcome());
  CallOutcome busy;
  busy.code = grpc::StatusCode::RESOURCE_EXHAUSTED;
  busy.message = "queue full";
  stats.Record(busy);
  busy.message = "another message";
  stats.Record(busy);
  CallOutcome bad = GoodOutcome();
  bad.usage_generated_tokens = 1;
  stats.Record(bad);

  const LoadgenResult result = stats.Summarize();
  EXPECT_EQ(result.ok, 3);
  EXPECT_EQ(result.failed, 2);
  EXPECT_EQ(result.bad_responses, 1);
  EXPECT_EQ(result.output_tokens, 12);
  EXPECT_EQ(result.errors_by_code.at("RESOURCE_EXHAUSTED"), 2);
  EXPECT_EQ(result.error_examples.at("RESOURCE_EXHAUSTED"), "queue full");
  EXPECT_EQ(result.time_to_first_token.count, 3);
  EXPECT_DOUBLE_EQ(result.time_to_first_token.p50_ms, 10);
  EXPECT_EQ(result.inter_token.count, 9);
  EXPECT_DOUBLE_EQ(result.end_to_end.p99_ms, 40);
  EXPECT_THAT(stats.first_bad_response(), HasSubstr("usage.generated_tokens = 1"));
}

// Each summary takes its samples from OK requests only, one per request (time to first
// token, end to end) or one per token after the first (inter-token).
TEST(LoadStatsTest, LatenciesComeFromOkRequestsOnly) {
  LoadStats stats;
  for (int i = 1; i <= 3; ++i) {
    CallOutcome o = GoodOutcome();
    o.time_to_first_token = absl::Milliseconds(10 * i);
    o.end = o.start + absl::Milliseconds(100 * i);
    o.inter_token_ms = {1.0 * i, 2.0 * i, 3.0 * i};
    stats.Record(o);
  }
  CallOutcome late = GoodOutcome();  // a failed call's times must not count
  late.code = grpc::StatusCode::DEADLINE_EXCEEDED;
  late.time_to_first_token = absl::Seconds(5);
  late.end = late.start + absl::Seconds(9);
  late.inter_token_ms = {5000};
  late.tokens = 7;  // nor its tokens: throughput counts what OK requests received
  stats.Record(late);

  const LoadgenResult result = stats.Summarize();
  EXPECT_EQ(result.output_tokens, 3 * GoodOutcome().tokens);
  EXPECT_EQ(result.time_to_first_token.count, 3);
  EXPECT_DOUBLE_EQ(result.time_to_first_token.p50_ms, 20);
  EXPECT_DOUBLE_EQ(result.time_to_first_token.max_ms, 30);
  EXPECT_DOUBLE_EQ(result.end_to_end.p50_ms, 200);
  EXPECT_DOUBLE_EQ(result.end_to_end.p99_ms, 300);
  EXPECT_DOUBLE_EQ(result.end_to_end.mean_ms, 200);
  EXPECT_EQ(result.inter_token.count, 9);
  EXPECT_DOUBLE_EQ(result.inter_token.max_ms, 9);
  EXPECT_DOUBLE_EQ(result.inter_token.p50_ms, 3);  // 1 2 2 3 3 4 6 6 9: the 5th
}

}  // namespace
}  // namespace int4kv
