#include "tools/latency_stats.h"

#include <algorithm>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace int4kv {
namespace {

TEST(LatencyStatsTest, EmptySummaryIsZero) {
  const LatencySummary s = LatencySamples().Summarize();
  EXPECT_EQ(s.count, 0);
  EXPECT_EQ(s.p50_ms, 0);
  EXPECT_EQ(s.max_ms, 0);
}

TEST(LatencyStatsTest, NearestRankOnOneToHundred) {
  // Shuffled 1..100: p50 = 50, p90 = 90, p99 = 99, max 100, mean 50.5.
  std::vector<double> values;
  for (int i = 1; i <= 100; ++i) values.push_back(i);
  std::shuffle(values.begin(), values.end(), std::mt19937(3));
  LatencySamples samples;
  for (double v : values) samples.Add(v);
  const LatencySummary s = samples.Summarize();
  EXPECT_EQ(s.count, 100);
  EXPECT_DOUBLE_EQ(s.mean_ms, 50.5);
  EXPECT_DOUBLE_EQ(s.p50_ms, 50);
  EXPECT_DOUBLE_EQ(s.p90_ms, 90);
  EXPECT_DOUBLE_EQ(s.p99_ms, 99);
  EXPECT_DOUBLE_EQ(s.max_ms, 100);
  EXPECT_EQ(s.percentile_samples, 100);  // under the capacity: every sample, exact
}

TEST(LatencyStatsTest, NearestRankOnFewSamples) {
  const std::vector<double> sorted = {1, 2, 3};
  EXPECT_DOUBLE_EQ(NearestRankPercentile(sorted, 50), 2);  // ceil(1.5) = 2nd
  EXPECT_DOUBLE_EQ(NearestRankPercentile(sorted, 90), 3);  // ceil(2.7) = 3rd
  EXPECT_DOUBLE_EQ(NearestRankPercentile(sorted, 1), 1);   // ceil(0.03) = 1st
  EXPECT_DOUBLE_EQ(NearestRankPercentile({7}, 99), 7);
  EXPECT_DOUBLE_EQ(NearestRankPercentile({}, 50), 0);
}

// Past its capacity the reservoir keeps a uniform sample: its percentiles land near the
// exact ones, while count, mean and max stay exact and memory stays at the capacity.
TEST(LatencyStatsTest, PastTheCapacityPercentilesComeFromAUniformSample) {
  constexpr int kCount = 100000;
  std::vector<double> values;
  for (int i = 1; i <= kCount; ++i) values.push_back(i);
  std::shuffle(values.begin(), values.end(), std::mt19937(5));
  LatencySamples samples(/*capacity=*/4000);
  for (double v : values) samples.Add(v);
  const LatencySummary s = samples.Summarize();
  EXPECT_EQ(s.count, kCount);
  EXPECT_EQ(s.percentile_samples, 4000);
  EXPECT_DOUBLE_EQ(s.mean_ms, (kCount + 1) / 2.0);
  EXPECT_DOUBLE_EQ(s.max_ms, kCount);
  // A uniform sample of 4000: each quantile within about 3 standard errors (p50: 0.8%).
  EXPECT_NEAR(s.p50_ms, 0.50 * kCount, 0.025 * kCount);
  EXPECT_NEAR(s.p90_ms, 0.90 * kCount, 0.015 * kCount);
  EXPECT_NEAR(s.p99_ms, 0.99 * kCount, 0.005 * kCount);
}

// Values that arrive in order: a reservoir that kept only the first or the last samples would
// put p50 at an end.
TEST(LatencyStatsTest, TheReservoirKeepsEarlyAndLateSamplesAlike) {
  LatencySamples samples(/*capacity=*/1000);
  for (int i = 1; i <= 50000; ++i) samples.Add(i);
  const LatencySummary s = samples.Summarize();
  EXPECT_NEAR(s.p50_ms, 25000, 2000);
  EXPECT_NEAR(s.p90_ms, 45000, 1000);
}

}  // namespace
}  // namespace int4kv
