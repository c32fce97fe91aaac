#include "server/cuda/decode_buckets.h"

#include <vector>

#include "gtest/gtest.h"

namespace int4kv {
namespace {

TEST(DecodeBucketsTest, PowersOfTwoCappedAtMaxBatch) {
  EXPECT_EQ(DecodeBuckets(1), (std::vector<int32_t>{1}));
  EXPECT_EQ(DecodeBuckets(6), (std::vector<int32_t>{1, 2, 4, 6}));
  EXPECT_EQ(DecodeBuckets(8), (std::vector<int32_t>{1, 2, 4, 8}));
  EXPECT_EQ(DecodeBuckets(256), (std::vector<int32_t>{1, 2, 4, 8, 16, 32, 64, 128, 256}));
  EXPECT_EQ(DecodeBuckets(1000), (std::vector<int32_t>{1, 2, 4, 8, 16, 32, 64, 128, 256}));
  EXPECT_TRUE(DecodeBuckets(0).empty());
}

TEST(DecodeBucketsTest, BucketForPicksTheSmallestThatFits) {
  const std::vector<int32_t> buckets = DecodeBuckets(6);
  EXPECT_EQ(BucketFor(buckets, 1), 1);
  EXPECT_EQ(BucketFor(buckets, 3), 4);
  EXPECT_EQ(BucketFor(buckets, 5), 6);
  EXPECT_EQ(BucketFor(buckets, 6), 6);
  EXPECT_EQ(BucketFor(buckets, 7), 0);  // above the largest: unpadded, no graph
}

}  // namespace
}  // namespace int4kv
