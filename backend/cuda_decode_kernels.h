// The CUDA decode-attention kernels (split-KV flash decoding over the INT4 cache) and their
// launch helpers. Host code includes this header; the kernels live in cuda_decode_kernels.cu.
//
// Split kernel: grid (chunk capacity, kv_heads), 4 warps a block. Block (c, h) attends the
// query heads of KV head h of chunk c's row over the chunk's tokens and writes a normalized
// partial output and its log2-sum-exp. Merge kernel: grid (batch, q_heads) combines a row's
// partials into the output. Both grids depend only on the batch size.
#ifndef INT4KV_BACKEND_CUDA_DECODE_KERNELS_H_
#define INT4KV_BACKEND_CUDA_DECODE_KERNELS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "backend/decode_plan.h"
#include "common/cuda_stream.h"
#include "common/dtype.h"
#include "kv_cache/int4_layout.h"

namespace int4kv {

struct SplitKernelParams {
  KvCacheView cache;            // device pools
  const int32_t* req_to_token;  // device [max_requests][req_to_token_stride]
  int64_t req_to_token_stride;
  const void* q;  // device [batch][q_heads][head_dim], fp16 or bf16
  int32_t q_is_bf16;
  int32_t layer;
  int32_t q_heads;
  int32_t group;  // query heads per KV head, 1..16
  int32_t head_dim;
  int32_t log2_group_size;  // log2 of the cache's group_size
  float scale_log2;         // softmax scale * log2(e)
  const ChunkWork* chunks;  // device [capacity]
  float* partial_out;       // device [capacity][q_heads][head_dim]
  float* partial_lse;       // device [capacity][q_heads], log2 domain
};

struct MergeKernelParams {
  const RowWork* rows;  // device [batch]
  const float* partial_out;
  const float* partial_lse;
  void* out;  // device [batch][q_heads][head_dim], fp16 or bf16
  int32_t out_is_bf16;
  int32_t q_heads;
  int32_t head_dim;
};

// The kernel instantiation for one cache/attention shape, chosen once at backend creation.
class DecodeKernels {
 public:
  // Fails (InvalidArgument) for shapes no instantiation covers.
  static absl::StatusOr<DecodeKernels> Select(int32_t head_dim, int32_t group, QuantMode mode,
                                              ParamDtype params);

  // Resident split blocks per multiprocessor at this kernel's registers and shared memory.
  int32_t blocks_per_sm() const { return blocks_per_sm_; }
  const char* variant() const { return variant_; }

  absl::Status LaunchSplit(const SplitKernelParams& params, int32_t capacity, int32_t kv_heads,
                           CudaStream stream) const;
  absl::Status LaunchMerge(const MergeKernelParams& params, int32_t batch, CudaStream stream) const;

 private:
  using SplitFn = void (*)(SplitKernelParams);
  SplitFn split_ = nullptr;
  int32_t smem_bytes_ = 0;
  int32_t blocks_per_sm_ = 0;
  const char* variant_ = "";
};

}  // namespace int4kv

#endif  // INT4KV_BACKEND_CUDA_DECODE_KERNELS_H_
