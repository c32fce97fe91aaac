#include "tools/loadgen_report.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;

LoadgenResult SomeResult() {
  LoadgenResult result;
  result.wall_seconds = 2.0;
  result.sent = 12;
  result.ok = 10;
  result.failed = 2;
  result.output_tokens = 640;
  result.peak_in_flight = 4;
  result.time_to_first_token = {10, 1.5, 1.0, 2.0, 3.0, 3.5, 10};
  result.errors_by_code["RESOURCE_EXHAUSTED"] = 2;
  result.error_examples["RESOURCE_EXHAUSTED"] = "queue \"full\"\n(max_queue = 8)";
  return result;
}

// An open loop's rate is printed as given, from the smallest rate the flag takes (0.001 req/s,
// which two decimals printed as 0.00) to large ones in plain digits.
TEST(LoadgenReportTest, OpenLoopRatesPrintAsGiven) {
  LoadgenConfig config;
  config.target = "127.0.0.1:1";
  config.max_in_flight = 8;
  for (const auto& [rate, text] : {std::pair<double, const char*>{0.001, "0.001"},
                                   {50, "50"},
                                   {12.5, "12.5"},
                                   {200000, "200000"}}) {
    config.rate = rate;
    EXPECT_THAT(
        FormatTextReport(config, v1::ServerInfo(), SomeResult()),
        HasSubstr(absl::StrCat("Poisson arrivals at ", text, " req/s (at most 8 in flight)")));
  }
}

TEST(LoadgenReportTest, TextReportHasRatesPercentilesAndErrors) {
  LoadgenConfig config;
  config.target = "127.0.0.1:1";
  config.concurrency = 4;
  const std::string text = FormatTextReport(config, v1::ServerInfo(), SomeResult());
  EXPECT_THAT(text, HasSubstr("closed loop, 4 concurrent streams"));
  EXPECT_THAT(text, HasSubstr("5.00 requests/s, 320.0 output tokens/s"));
  EXPECT_THAT(text, HasSubstr("p50      1.00  p90      2.00  p99      3.00"));
  EXPECT_THAT(text, HasSubstr("RESOURCE_EXHAUSTED"));
  EXPECT_THAT(text, HasSubstr("peak in flight 4"));
  EXPECT_THAT(text, HasSubstr("(10 samples)"));
  // Percentiles from a reservoir, not every sample, say so.
  LoadgenResult sampled = SomeResult();
  sampled.time_to_first_token.count = 5000000;
  sampled.time_to_first_token.percentile_samples = 4194304;
  EXPECT_THAT(FormatTextReport(config, v1::ServerInfo(), sampled),
              HasSubstr("(5000000 samples; percentiles of a uniform 4194304)"));
}

TEST(LoadgenReportTest, JsonCarriesTheNumbersAndEscapesMessages) {
  LoadgenConfig config;
  config.target = "127.0.0.1:1";
  config.rate = 3.5;
  const std::string json = FormatJsonReport(config, v1::ServerInfo(), SomeResult());
  EXPECT_THAT(json, HasSubstr("\"mode\": \"open\""));
  EXPECT_THAT(json, HasSubstr("\"rate\": 3.5"));
  EXPECT_THAT(json, HasSubstr("\"ok\": 10"));
  EXPECT_THAT(json, HasSubstr("\"requests_per_s\": 5,"));
  EXPECT_THAT(json, HasSubstr("\"output_tokens_per_s\": 320,"));
  EXPECT_THAT(json, HasSubstr("\"ttft_ms\": {\"count\": 10, \"mean\": 1.5, \"p50\": 1, "
                              "\"p90\": 2, \"p99\": 3, \"max\": 3.5, \"percentile_samples\": 10}"));
  EXPECT_THAT(json, HasSubstr("\"errors_by_code\": {\"RESOURCE_EXHAUSTED\": 2}"));
  EXPECT_THAT(json, HasSubstr("queue \\\"full\\\"\\n(max_queue = 8)"));
  // Balanced braces, one object, newline-terminated.
  int depth = 0;
  for (char c : json) depth += c == '{' ? 1 : c == '}' ? -1 : 0;
  EXPECT_EQ(depth, 0);
  EXPECT_EQ(json.front(), '{');
  EXPECT_EQ(json.back(), '\n');
}

// A run in which nothing succeeded has no latencies: the report says so instead of 0 ms.
TEST(LoadgenReportTest, LatenciesWithoutSamplesAreNotZeros) {
  LoadgenConfig config;
  config.target = "127.0.0.1:1";
  config.concurrency = 2;
  LoadgenResult result;
  result.wall_seconds = 1.0;
  result.sent = 2;
  result.failed = 2;
  result.errors_by_code["DEADLINE_EXCEEDED"] = 2;
  result.error_examples["DEADLINE_EXCEEDED"] = "Deadline Exceeded";
  const std::string text = FormatTextReport(config, v1::ServerInfo(), result);
  EXPECT_THAT(text, HasSubstr("time to first token    n/a (0 samples)"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("p50      0.00")));
  const std::string json = FormatJsonReport(config, v1::ServerInfo(), result);
  EXPECT_THAT(json, HasSubstr("\"e2e_ms\": {\"count\": 0, \"mean\": null, \"p50\": null, "
                              "\"p90\": null, \"p99\": null, \"max\": null, "
                              "\"percentile_samples\": 0}"));
}

// A closed loop whose median request outlasts --duration measured one wave, not a steady
// load; an open loop reports how late its sender ran.
TEST(LoadgenReportTest, SaysWhatAShortRunMeasuredAndHowLateTheSenderRan) {
  LoadgenConfig config;
  config.target = "127.0.0.1:1";
  config.concurrency = 64;
  config.duration = absl::Seconds(1);
  LoadgenResult result = SomeResult();
  result.end_to_end = {10, 5000, 5000, 6000, 7000, 7000};
  EXPECT_THAT(FormatTextReport(config, v1::ServerInfo(), result),
              HasSubstr("the median request outlasted --duration, so these figures describe "
                        "about one wave of 64 simultaneous requests"));
  config.duration = absl::Seconds(10);
  EXPECT_THAT(FormatTextReport(config, v1::ServerInfo(), result),
              ::testing::Not(HasSubstr("one wave")));
  config.rate = 100;
  result.max_send_lag_ms = 12.5;
  EXPECT_THAT(FormatTextReport(config, v1::ServerInfo(), result),
              HasSubstr("sender lag max 12.50 ms"));
  EXPECT_THAT(FormatJsonReport(config, v1::ServerInfo(), result),
              HasSubstr("\"max_send_lag_ms\": 12.5"));
}

}  // namespace
}  // namespace int4kv
