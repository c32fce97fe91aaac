// Sizing the device KV cache as a fraction of free GPU memory
// (EngineConfig::kv_gpu_memory_fraction). The scheduler applies the rule once at start-up, after
// the CUDA model exists (weights, activations, cuBLAS workspace) and before the KV pools do:
//
//   free    = cudaMemGetInfo's free bytes at that moment
//   other   = the device bytes the cache and its attention take besides the pools:
//             req_to_token's device mirror and its staging, the decode backend's workspace, the
//             step's slot buffer, and the allocation rounding of small pools. Measured (free
//             before minus free after) by creating them once around a one-slot cache, then
//             freeing them.
//   reserve = kKvSizingReserveBytes, for what comes later and cannot be measured first: the
//             decode CUDA graphs (captured over the real pools), kernels the driver loads at
//             their first launch, and the rounding of the real pools' allocations
//   base    = free - other - reserve        the memory left free after every start-up buffer
//   budget  = floor(fraction * base)
//   slots   = CapacityForBudget(kv, budget) so the pools take at most `budget` bytes
//
// With fraction 1 the pools take all of `base`; what is left free afterwards is the reserve
// minus what the graphs and lazily loaded kernels used.
#ifndef INT4KV_SERVER_CUDA_KV_GPU_SIZING_H_
#define INT4KV_SERVER_CUDA_KV_GPU_SIZING_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "common/cuda_stream.h"
#include "common/dtype.h"
#include "kv_cache/kv_cache_config.h"

namespace int4kv {

constexpr int64_t kKvSizingReserveBytes = int64_t{512} << 20;

// One application of the rule above, every term in bytes.
struct KvGpuSizing {
  double fraction = 0.0;
  int64_t free_bytes = 0;
  int64_t other_bytes = 0;
  int64_t reserve_bytes = 0;
  int64_t base_bytes = 0;
  int64_t budget_bytes = 0;
  int64_t capacity_slots = 0;  // 0: not sized this way
};

// The arithmetic of the rule for a cache config `kv` (its capacity ignored). InvalidArgument for
// a fraction outside (0, 1]; ResourceExhausted, with every term in the message, when the budget
// holds no token slot.
absl::StatusOr<KvGpuSizing> ComputeKvGpuSizing(const KvCacheConfig& kv, double fraction,
                                               int64_t free_bytes, int64_t other_bytes,
                                               int64_t reserve_bytes = kKvSizingReserveBytes);

// cudaMemGetInfo's free bytes on the current device.
absl::StatusOr<int64_t> FreeDeviceBytes();

// Measures `free` and `other` on the current device and applies the rule. kv: the device cache's
// config (its capacity ignored); q_heads, max_step_tokens, io_dtype and stream: those the
// scheduler creates its CudaKvAttention with. Leaves the device as it found it.
absl::StatusOr<KvGpuSizing> SizeKvCacheForFreeGpuMemory(const KvCacheConfig& kv, double fraction,
                                                        int32_t q_heads, int32_t max_step_tokens,
                                                        DType io_dtype, CudaStream stream);

}  // namespace int4kv

#endif  // INT4KV_SERVER_CUDA_KV_GPU_SIZING_H_
