// The arithmetic of sizing the KV cache from free GPU memory; runs without a GPU (the
// measurement itself is covered by cuda_engine_info_test on a GPU).
#include "server/cuda/kv_gpu_sizing.h"

#include <cmath>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;

// stories260K's cache: 5 layers x 4 KV heads x (K, V) x (4 code + 2 scale bytes) = 240 bytes
// a token.
KvCacheConfig Stories() {
  KvCacheConfig kv;
  kv.num_layers = 5;
  kv.kv_heads = 4;
  kv.head_dim = 8;
  kv.group_size = 8;
  kv.max_requests = 8;
  kv.max_seq_len = 512;
  return kv;
}

constexpr int64_t kGiB = int64_t{1} << 30;

TEST(KvGpuSizingTest, AppliesTheRuleTermByTerm) {
  const absl::StatusOr<KvGpuSizing> sizing =
      ComputeKvGpuSizing(Stories(), 0.5, 10 * kGiB, 3 << 20, kKvSizingReserveBytes);
  ASSERT_TRUE(sizing.ok()) << sizing.status();
  EXPECT_EQ(sizing->fraction, 0.5);
  EXPECT_EQ(sizing->free_bytes, 10 * kGiB);
  EXPECT_EQ(sizing->other_bytes, 3 << 20);
  EXPECT_EQ(sizing->reserve_bytes, kKvSizingReserveBytes);
  const int64_t base = 10 * kGiB - (3 << 20) - kKvSizingReserveBytes;
  EXPECT_EQ(sizing->base_bytes, base);
  EXPECT_EQ(sizing->budget_bytes, base / 2);
  EXPECT_EQ(sizing->capacity_slots, base / 2 / 240 - 1);  // slot 0 is reserved
  // The pools fit the budget and waste less than one token of it.
  KvCacheConfig kv = Stories();
  kv.capacity_slots = sizing->capacity_slots;
  EXPECT_LE(kv.PoolBytes(), sizing->budget_bytes);
  EXPECT_GT(kv.PoolBytes(), sizing->budget_bytes - 240);
}

TEST(KvGpuSizingTest, FractionOneTakesTheWholeBase) {
  const absl::StatusOr<KvGpuSizing> sizing = ComputeKvGpuSizing(Stories(), 1.0, kGiB, 0, 0);
  ASSERT_TRUE(sizing.ok()) << sizing.status();
  EXPECT_EQ(sizing->budget_bytes, kGiB);
  EXPECT_EQ(sizing->capacity_slots, kGiB / 240 - 1);
}

TEST(KvGpuSizingTest, DefaultReserveIsApplied) {
  const absl::StatusOr<KvGpuSizing> sizing = ComputeKvGpuSizing(Stories(), 1.0, 2 * kGiB, 0);
  ASSERT_TRUE(sizing.ok()) << sizing.status();
  EXPECT_EQ(sizing->reserve_bytes, kKvSizingReserveBytes);
  EXPECT_EQ(sizing->base_bytes, 2 * kGiB - kKvSizingReserveBytes);
}

TEST(KvGpuSizingTest, NegativeMeasurementCountsAsZero) {
  // Another process may free memory between the two readings of the measurement.
  const absl::StatusOr<KvGpuSizing> sizing = ComputeKvGpuSizing(Stories(), 1.0, kGiB, -4096, 0);
  ASSERT_TRUE(sizing.ok()) << sizing.status();
  EXPECT_EQ(sizing->other_bytes, 0);
  EXPECT_EQ(sizing->base_bytes, kGiB);
}

TEST(KvGpuSizingTest, CapacityIsCappedAtTheSlotLimit) {
  KvCacheConfig kv = Stories();
  kv.num_layers = 1;
  kv.kv_heads = 1;  // 12 bytes a token: 2^31 slots need 24 GiB
  const absl::StatusOr<KvGpuSizing> sizing = ComputeKvGpuSizing(kv, 1.0, 64 * kGiB, 0, 0);
  ASSERT_TRUE(sizing.ok()) << sizing.status();
  EXPECT_EQ(sizing->capacity_slots, kMaxCapacitySlots);
}

TEST(KvGpuSizingTest, NoRoomIsResourceExhaustedWithEveryTerm) {
  const absl::StatusOr<KvGpuSizing> sizing =
      ComputeKvGpuSizing(Stories(), 0.9, kKvSizingReserveBytes + 1000, 500);
  ASSERT_FALSE(sizing.ok());
  EXPECT_EQ(sizing.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(sizing.status().message(), HasSubstr("kv_gpu_memory_fraction = 0.9"));
  EXPECT_THAT(sizing.status().message(), HasSubstr("less 500 for"));
  EXPECT_THAT(sizing.status().message(), HasSubstr("budget of 450 bytes"));
  EXPECT_THAT(sizing.status().message(), HasSubstr("at least 480"));
  // Less free memory than the reserve.
  const absl::StatusOr<KvGpuSizing> none = ComputeKvGpuSizing(Stories(), 1.0, 1 << 20, 0);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(none.status().message(), HasSubstr("budget of 0 bytes"));
}

TEST(KvGpuSizingTest, FractionOutsideTheRangeIsInvalid) {
  for (const double fraction : {0.0, -0.5, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
    const absl::StatusOr<KvGpuSizing> sizing = ComputeKvGpuSizing(Stories(), fraction, kGiB, 0);
    ASSERT_FALSE(sizing.ok()) << fraction;
    EXPECT_EQ(sizing.status().code(), absl::StatusCode::kInvalidArgument) << fraction;
    EXPECT_THAT(sizing.status().message(), HasSubstr("must be in (0, 1]")) << fraction;
  }
}

TEST(KvGpuSizingTest, InvalidCacheConfigIsReported) {
  KvCacheConfig kv = Stories();
  kv.group_size = 12;
  const absl::StatusOr<KvGpuSizing> sizing = ComputeKvGpuSizing(kv, 0.5, kGiB, 0);
  ASSERT_FALSE(sizing.ok());
  EXPECT_EQ(sizing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(sizing.status().message(), HasSubstr("group_size"));
}

}  // namespace
}  // namespace int4kv
