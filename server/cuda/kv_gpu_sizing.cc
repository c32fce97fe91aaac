#include "server/cuda/kv_gpu_sizing.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/cuda_check.h"
#include "common/exact_number.h"
#include "common/status_macros.h"
#include "kv_cache/kv_cache.h"
#include "server/cuda/cuda_kv_attention.h"

namespace int4kv {

absl::StatusOr<KvGpuSizing> ComputeKvGpuSizing(const KvCacheConfig& kv, double fraction,
                                               int64_t free_bytes, int64_t other_bytes,
                                               int64_t reserve_bytes) {
  if (!(fraction > 0.0 && fraction <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("EngineConfig.kv_gpu_memory_fraction = ", ExactNumber(fraction),
                     " is invalid: must be in (0, 1]"));
  }
  KvGpuSizing sizing;
  sizing.fraction = fraction;
  sizing.free_bytes = free_bytes;
  sizing.other_bytes = std::max<int64_t>(other_bytes, 0);
  sizing.reserve_bytes = std::max<int64_t>(reserve_bytes, 0);
  sizing.base_bytes = std::max<int64_t>(free_bytes - sizing.other_bytes - sizing.reserve_bytes, 0);
  sizing.budget_bytes =
      static_cast<int64_t>(std::floor(fraction * static_cast<double>(sizing.base_bytes)));
  KvCacheConfig probe = kv;
  probe.capacity_slots = 1;
  RETURN_IF_ERROR(probe.Validate());
  const int64_t per_token = probe.BytesPerToken();
  // One row of the pools is the reserved slot 0.
  if (sizing.budget_bytes < 2 * per_token) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "EngineConfig.kv_gpu_memory_fraction = ", ExactNumber(fraction),
        " leaves no room for the KV cache: ", free_bytes,
        " bytes of GPU memory are free after the model, less ", sizing.other_bytes,
        " for the cache's other buffers and the attention's workspace and ", sizing.reserve_bytes,
        " reserved for CUDA graphs and kernels, gives a budget of ", sizing.budget_bytes,
        " bytes; the pools need at least ", 2 * per_token, " (", per_token,
        " bytes a token, slot 0 reserved)"));
  }
  ASSIGN_OR_RETURN(sizing.capacity_slots, CapacityForBudget(kv, sizing.budget_bytes));
  return sizing;
}

absl::StatusOr<int64_t> FreeDeviceBytes() {
  size_t free_bytes = 0;
  size_t total_bytes = 0;
  CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
  return static_cast<int64_t>(free_bytes);
}

absl::StatusOr<KvGpuSizing> SizeKvCacheForFreeGpuMemory(const KvCacheConfig& kv, double fraction,
                                                        int32_t q_heads, int32_t max_step_tokens,
                                                        DType io_dtype, CudaStream stream) {
  ASSIGN_OR_RETURN(const int64_t free_bytes, FreeDeviceBytes());
  int64_t other_bytes = 0;
  {
    KvCacheConfig one_slot = kv;
    one_slot.capacity_slots = 1;
    ASSIGN_OR_RETURN(std::unique_ptr<KvCache> cache,
                     KvCache::Create(one_slot, MemoryKind::kDevice));
    ASSIGN_OR_RETURN(
        std::unique_ptr<CudaKvAttention> attention,
        CudaKvAttention::Create(cache.get(), q_heads, max_step_tokens, io_dtype, stream));
    ASSIGN_OR_RETURN(const int64_t free_with_probe, FreeDeviceBytes());
    other_bytes = free_bytes - free_with_probe;
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
    attention.reset();  // it reads the cache: destroyed first
  }
  return ComputeKvGpuSizing(kv, fraction, free_bytes, other_bytes);
}

}  // namespace int4kv
