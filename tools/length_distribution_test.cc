#include "tools/length_distribution.h"

#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;

TEST(LengthDistributionTest, FixedCountAlwaysSamplesIt) {
  const absl::StatusOr<LengthDistribution> d = LengthDistribution::Parse("output_len", "64");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->fixed());
  EXPECT_EQ(d->ToString(), "64");
  std::mt19937_64 rng(1);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(d->Sample(rng), 64);
}

TEST(LengthDistributionTest, RangeSamplesEveryValueAndNothingOutside) {
  const absl::StatusOr<LengthDistribution> d = LengthDistribution::Parse("prompt_len", "3-7");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FALSE(d->fixed());
  EXPECT_EQ(d->ToString(), "3-7");
  EXPECT_DOUBLE_EQ(d->Mean(), 5.0);
  std::mt19937_64 rng(7);
  std::map<int32_t, int> seen;
  for (int i = 0; i < 5000; ++i) ++seen[d->Sample(rng)];
  ASSERT_EQ(seen.size(), 5u);
  EXPECT_EQ(seen.begin()->first, 3);
  EXPECT_EQ(seen.rbegin()->first, 7);
  for (const auto& [value, count] : seen) EXPECT_GT(count, 800) << value;  // ~1000 each
}

TEST(LengthDistributionTest, BadTextIsRejectedNamingTheFlag) {
  for (const char* text : {"", "x", "0", "-3", "5-2", "1-2-3", "4-", "2.5"}) {
    const absl::StatusOr<LengthDistribution> d = LengthDistribution::Parse("prompt_len", text);
    ASSERT_FALSE(d.ok()) << text;
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(d.status().message(), HasSubstr("--prompt_len"));
    EXPECT_THAT(d.status().message(), HasSubstr("1 <= A <= B"));
  }
  EXPECT_THAT(LengthDistribution::Parse("prompt_len", "3000000000").status().message(),
              HasSubstr("'3000000000' is invalid: not a count up to 2^31 - 1"));
  EXPECT_THAT(LengthDistribution::Parse("prompt_len", "1-3000000000").status().message(),
              HasSubstr("the upper bound is not a count up to 2^31 - 1"));
}

}  // namespace
}  // namespace int4kv
