// GPU tests of the benchmark's read kernels: the gather read must read every row its page
// table names exactly once, whatever the row sizes and the token count.
#include "backend/read_stream.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "common/cuda_check.h"
#include "common/device_memory.h"

namespace int4kv {
namespace {

// Device copy of `host`; fails the test if the copy does.
DeviceBuffer ToDevice(const std::vector<uint32_t>& host) {
  DeviceBuffer buffer;
  EXPECT_TRUE(buffer.Allocate(host.size() * sizeof(uint32_t), "test data").ok());
  EXPECT_EQ(
      cudaMemcpy(buffer.get(), host.data(), host.size() * sizeof(uint32_t), cudaMemcpyHostToDevice),
      cudaSuccess);
  return buffer;
}

// Runs the gather read over `slots` of the pools `data` and `params` (rows of the given
// sizes) and expects its checksum to be `expected`.
void ExpectGatherChecksum(const std::vector<uint32_t>& data, int data_row_bytes,
                          const std::vector<uint32_t>& params, int param_row_bytes,
                          const std::vector<uint32_t>& slots, uint32_t expected) {
  DeviceBuffer data_d = ToDevice(data), params_d = ToDevice(params), slots_d = ToDevice(slots);
  DeviceBuffer checksum = ToDevice({0u});
  ASSERT_EQ(LaunchGatherRead(slots_d.as<int32_t>(), static_cast<int64_t>(slots.size()),
                             data_d.get(), data_row_bytes, params_d.get(), param_row_bytes,
                             checksum.as<uint32_t>(), nullptr),
            cudaSuccess);
  uint32_t got = 0;
  ASSERT_EQ(cudaMemcpy(&got, checksum.get(), sizeof(got), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(got, expected);
}

// Pools of `num_slots` rows of random words; `tokens` slots drawn from a permutation of
// [1, num_slots), so some slots are never read and a read of the wrong row changes the sum.
void ExpectGatherReadsEachRowOnce(int num_slots, int tokens, int data_row_bytes,
                                  int param_row_bytes, uint32_t seed) {
  SCOPED_TRACE(testing::Message() << tokens << " tokens of " << data_row_bytes << " + "
                                  << param_row_bytes << " bytes");
  std::mt19937 rng(seed);
  const int data_words = data_row_bytes / 4, param_words = param_row_bytes / 4;
  std::vector<uint32_t> data(static_cast<size_t>(num_slots) * data_words);
  std::vector<uint32_t> params(static_cast<size_t>(num_slots) * param_words);
  for (uint32_t& w : data) w = rng();
  for (uint32_t& w : params) w = rng();
  std::vector<uint32_t> permutation(num_slots - 1);
  std::iota(permutation.begin(), permutation.end(), 1u);
  std::shuffle(permutation.begin(), permutation.end(), rng);
  ASSERT_LE(tokens, num_slots - 1);
  std::vector<uint32_t> slots(permutation.begin(), permutation.begin() + tokens);

  uint32_t expected = 0;
  for (uint32_t slot : slots) {
    for (int w = 0; w < data_words; ++w) expected += data[size_t{slot} * data_words + w];
    for (int w = 0; w < param_words; ++w) expected += params[size_t{slot} * param_words + w];
  }

  ExpectGatherChecksum(data, data_row_bytes, params, param_row_bytes, slots, expected);
}

TEST(GatherReadTest, ReadsEachRowOfThePageTableOnce) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  // The benchmark's rows (group 8 and group 32 scales: 96 and 72 units of 16 bytes), then rows
  // of 4 units and of 7, whose token boundaries fall at odd lanes; where the grid's thread
  // count is no multiple of the units (72 and 7 on an H100), a thread lands on a different
  // unit of a token from one pass of the grid to the next. Token counts from one to several
  // passes of the whole grid.
  ExpectGatherReadsEachRowOnce(1 << 16, 40000, 1024, 512, 1);
  ExpectGatherReadsEachRowOnce(1 << 16, 40000, 1024, 128, 2);
  ExpectGatherReadsEachRowOnce(5000, 4999, 48, 16, 3);
  ExpectGatherReadsEachRowOnce(1 << 16, 40000, 80, 32, 6);
  ExpectGatherReadsEachRowOnce(5000, 1, 1024, 512, 4);
  ExpectGatherReadsEachRowOnce(5000, 37, 16, 0, 5);
}

// Without a checksum the kernel only reads (decode_bench's timing): it must still run cleanly.
TEST(GatherReadTest, RunsWithoutAChecksum) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  DeviceBuffer pool = ToDevice(std::vector<uint32_t>(1024, 1u));
  DeviceBuffer slots = ToDevice({3u, 1u, 2u});
  ASSERT_EQ(
      LaunchGatherRead(slots.as<int32_t>(), 3, pool.get(), 64, pool.get(), 16, nullptr, nullptr),
      cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST(GatherReadTest, RefusesRowsAndCountsItCannotRead) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  DeviceBuffer pool = ToDevice(std::vector<uint32_t>(1024, 1u));
  DeviceBuffer slots = ToDevice({1u, 2u});
  DeviceBuffer checksum = ToDevice({0u});
  EXPECT_EQ(LaunchGatherRead(slots.as<int32_t>(), 2, pool.get(), 24, pool.get(), 16,
                             checksum.as<uint32_t>(), nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(LaunchGatherRead(slots.as<int32_t>(), 2, pool.get(), 16, pool.get(), 8,
                             checksum.as<uint32_t>(), nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(LaunchGatherRead(slots.as<int32_t>(), 2, pool.as<uint8_t>() + 4, 16, pool.get(), 16,
                             checksum.as<uint32_t>(), nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(LaunchGatherRead(slots.as<int32_t>(), 2, pool.get(), 0, pool.get(), 0,
                             checksum.as<uint32_t>(), nullptr),
            cudaErrorInvalidValue);
  // A token count within a few grid passes of 2^31: the kernel's token index would wrap.
  EXPECT_EQ(LaunchGatherRead(slots.as<int32_t>(), (int64_t{1} << 31) - 16, pool.get(), 16,
                             pool.get(), 16, checksum.as<uint32_t>(), nullptr),
            cudaErrorInvalidValue);
}

// A step whose bytes pass 2^31 units of 16 (decode_bench's 384 x 65536 at group 8: 25M tokens
// of 96 units) is read in full: the kernel never forms tokens x units, so only the token count
// is bounded. 22.5M tokens of 96 units, over 4 rows repeated, so that the pools stay small and
// the sum is known (the slots alone take 90 MB).
TEST(GatherReadTest, ReadsStepsOfMoreThan2To31Units) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  constexpr int kRows = 4, kDataBytes = 1024, kParamBytes = 512;
  constexpr int64_t kTokens = 22'500'000;
  static_assert(kTokens * (kDataBytes + kParamBytes) / 16 > (int64_t{1} << 31));
  std::mt19937 rng(11);
  std::vector<uint32_t> data(kRows * kDataBytes / 4), params(kRows * kParamBytes / 4);
  for (uint32_t& w : data) w = rng();
  for (uint32_t& w : params) w = rng();
  std::vector<uint32_t> row_sums(kRows, 0);
  for (int r = 0; r < kRows; ++r) {
    for (int w = 0; w < kDataBytes / 4; ++w) row_sums[r] += data[r * kDataBytes / 4 + w];
    for (int w = 0; w < kParamBytes / 4; ++w) row_sums[r] += params[r * kParamBytes / 4 + w];
  }
  std::vector<uint32_t> slots(kTokens);
  uint32_t expected = 0;
  for (int64_t t = 0; t < kTokens; ++t) {
    slots[t] = static_cast<uint32_t>((t * 7 + t / 3) % kRows);
    expected += row_sums[slots[t]];
  }
  ExpectGatherChecksum(data, kDataBytes, params, kParamBytes, slots, expected);
}

}  // namespace
}  // namespace int4kv
