#include "server/cuda/cuda_kv_attention.h"

#include <cuda_runtime.h>

#include <memory>
#include <vector>

#include "common/cuda_check.h"
#include "common/device_memory.h"
#include "gtest/gtest.h"
#include "kv_cache/kv_cache.h"
#include "server/step_batch.h"

namespace int4kv {
namespace {

constexpr int kQHeads = 4, kKvHeads = 2, kHeadDim = 64, kMaxStepTokens = 4;

// A Prepare that fails after copying its slots must leave nothing prepared: Store would
// otherwise quantize the next K/V into the slot buffer's mix of this call's and an earlier
// step's slots, which may by then belong to other requests.
TEST(CudaKvAttentionTest, AFailedPrepareLeavesNothingToStoreOrRun) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  KvCacheConfig config;
  config.num_layers = 1;
  config.kv_heads = kKvHeads;
  config.head_dim = kHeadDim;
  config.group_size = 8;
  config.capacity_slots = 16;
  config.max_requests = 2;
  config.max_seq_len = 8;
  absl::StatusOr<std::unique_ptr<KvCache>> cache = KvCache::Create(config, MemoryKind::kDevice);
  ASSERT_TRUE(cache.ok()) << cache.status();
  absl::StatusOr<std::unique_ptr<CudaKvAttention>> attention = CudaKvAttention::Create(
      cache->get(), kQHeads, kMaxStepTokens, DType::kFloat16, /*stream=*/nullptr);
  ASSERT_TRUE(attention.ok()) << attention.status();

  const int32_t row = *(*cache)->requests().AllocateRequest();
  std::vector<int32_t> slots;
  ASSERT_TRUE((*cache)->slots().Allocate(2, &slots).ok());
  ASSERT_TRUE((*cache)->requests().Append(row, slots).ok());
  StepBatch batch;
  batch.AddToken(0, 0, slots[0], row);
  batch.AddToken(0, 1, slots[1], row);
  ASSERT_TRUE((*attention)->Plan(batch).ok());
  ASSERT_TRUE((*attention)->Prepare(2).ok());
  ASSERT_EQ((*attention)->prepared_rows(), 2);

  // The request is freed behind the attention's back: the backend's Plan inside the next
  // Prepare refuses its rows, after the slots have gone to the device buffer.
  ASSERT_TRUE((*cache)->requests().FreeRequest(row).ok());
  EXPECT_EQ((*attention)->Prepare(2).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*attention)->prepared_rows(), -1);

  DeviceBuffer kv, q_out;
  ASSERT_TRUE(kv.Allocate(kMaxStepTokens * kKvHeads * kHeadDim * 2, "k and v").ok());
  ASSERT_TRUE(q_out.Allocate(kMaxStepTokens * kQHeads * kHeadDim * 2, "q and out").ok());
  EXPECT_EQ((*attention)->Store(0, kv.get(), kv.get(), 0).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*attention)->Run(0, q_out.get(), q_out.get()).code(),
            absl::StatusCode::kFailedPrecondition);
  // Attend prepares again, and is refused for the same reason as that Prepare.
  EXPECT_EQ((*attention)->Attend(0, q_out.get(), kv.get(), kv.get(), q_out.get()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

}  // namespace
}  // namespace int4kv
