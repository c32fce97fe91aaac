// The CUDA backend's Plan and Run allocate nothing (cuda_decode_backend.h): this binary
// counts every global operator new, and reads the device's free memory, while a backend
// plans and runs steps of changing rows, with the default plan and in the batch-invariant
// mode. Skips without a CUDA device.
#include <cuda_runtime.h>

#include <vector>

#include "backend/cuda_decode_backend.h"
#include "backend/testing/allocation_counter.h"
#include "common/cuda_check.h"
#include "common/device_memory.h"
#include "gtest/gtest.h"
#include "kv_cache/kv_cache.h"

namespace int4kv {
namespace {

// The parameter is BackendOptions.batch_invariant_splits.
class CudaPlanRunAllocationTest : public ::testing::TestWithParam<int32_t> {};

TEST_P(CudaPlanRunAllocationTest, PlansAndRunsAllocateNothing) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  constexpr int kQHeads = 32;
  KvCacheConfig config;
  config.num_layers = 2;
  config.kv_heads = 8;
  config.head_dim = 128;
  config.capacity_slots = 8192;
  config.max_requests = 4;
  config.max_seq_len = 4096;
  absl::StatusOr<std::unique_ptr<KvCache>> cache = KvCache::Create(config, MemoryKind::kDevice);
  ASSERT_TRUE(cache.ok()) << cache.status();
  std::vector<int32_t> requests;
  for (int length : {4096, 1000, 3000}) {
    const int32_t request = *(*cache)->requests().AllocateRequest();
    ASSERT_TRUE((*cache)->AppendNewSlots(request, length, nullptr).ok());
    requests.push_back(request);
  }
  ASSERT_TRUE((*cache)->requests().SyncToDevice(nullptr).ok());
  BackendOptions options;
  options.io_dtype = DType::kFloat16;
  options.batch_invariant_splits = GetParam();
  absl::StatusOr<std::unique_ptr<DecodeAttentionBackend>> backend =
      CreateCudaDecodeBackend(BindingFor(**cache), ShapeFor(**cache, kQHeads, 4), options);
  ASSERT_TRUE(backend.ok()) << backend.status();
  const size_t elements = size_t{4} * kQHeads * config.head_dim;
  DeviceBuffer q, out;
  ASSERT_TRUE(q.Allocate(elements * 2, "q").ok());
  ASSERT_TRUE(out.Allocate(elements * 2, "out").ok());
  ASSERT_EQ(cudaMemset(q.get(), 0, elements * 2), cudaSuccess);

  // Steps of different shapes: long and short rows, a padded row, fewer rows.
  const std::vector<std::vector<DecodeRow>> steps = {
      {{requests[0], 4096}, {requests[1], 1000}, {requests[2], 0}, {requests[2], 3000}},
      {{requests[1], 17}, {requests[0], 1}},
      {{requests[2], 2999}, {requests[0], 4000}, {requests[1], 999}},
  };
  // One round first: the CUDA runtime loads the kernels on their first launch.
  for (const std::vector<DecodeRow>& rows : steps) {
    ASSERT_TRUE((*backend)->Plan(rows, nullptr).ok());
    for (int layer = 0; layer < 2; ++layer) {
      ASSERT_TRUE((*backend)->Run(layer, q.get(), out.get(), nullptr).ok());
    }
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  size_t free_before = 0, free_after = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_before, &total), cudaSuccess);
  const int64_t before = GlobalAllocations();
  bool all_ok = true;
  for (int round = 0; round < 10; ++round) {
    for (const std::vector<DecodeRow>& rows : steps) {
      all_ok = all_ok && (*backend)->Plan(rows, nullptr).ok();
      for (int layer = 0; layer < 2; ++layer) {
        all_ok = all_ok && (*backend)->Run(layer, q.get(), out.get(), nullptr).ok();
      }
    }
  }
  const int64_t allocations = GlobalAllocations() - before;
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_EQ(cudaMemGetInfo(&free_after, &total), cudaSuccess);
  EXPECT_TRUE(all_ok);
  EXPECT_EQ(allocations, 0);
  EXPECT_EQ(free_after, free_before);
}

INSTANTIATE_TEST_SUITE_P(Splits, CudaPlanRunAllocationTest, ::testing::Values(0, 16));

}  // namespace
}  // namespace int4kv
