// Decode attention on CUDA over a device-memory INT4 cache: split-KV flash decoding with a
// merge stage, grouped-query heads on tensor cores, grids and workspace that depend only on
// the batch size and the shape fixed at creation, never on the step's lengths (so Run can be
// captured once per batch bucket and replayed).
//
// Memory: all device buffers (chunk metadata, partial outputs, log-sum-exps), a pinned
// staging area and the host plan are allocated at creation for max_batch; Plan and Run
// allocate nothing, in host or device memory (cuda_plan_run_allocation_test). The default
// plan's workspace holds ChunkCapacity(max_batch, target, cap, max_seq_len) chunks
// (decode_plan.h; target = the split kernel's resident warps / kv_heads, 264 on an H100 or
// H200 with 8 KV heads; cap = DecodeKernels::max_chunk_tokens), at most max_batch + 4 x
// target, of 4 x q_heads x (head_dim + 1) bytes each: at group size 8, 19.6 MB for 128 rows of
// 65,536 tokens with 32 query heads of 128 (6.5 MB at group sizes 32-128, which take no cap).
// memory() reports the bytes allocated (cuda_decode_backend_test checks them against the
// device's free memory).
#ifndef INT4KV_BACKEND_CUDA_DECODE_BACKEND_H_
#define INT4KV_BACKEND_CUDA_DECODE_BACKEND_H_

#include <memory>

#include "absl/status/statusor.h"
#include "backend/decode_attention_backend.h"

namespace int4kv {

// cache: device pools and the device req_to_token table. options.io_dtype: float16 or bfloat16.
// q, out (and lse) of Run are device pointers. Every Plan, Run and replay of one backend must be
// ordered on the device as they are called: one stream does it (Plan's metadata copy is ordered
// before the kernels that read it, and after the previous step's kernels, which read the same
// buffers). Inputs must keep |q| and the dequantized K/V below 65504: the tensor cores take
// fp16 operands.
absl::StatusOr<std::unique_ptr<DecodeAttentionBackend>> CreateCudaDecodeBackend(
    const KvCacheBinding& cache, const AttentionShape& shape, const BackendOptions& options);

}  // namespace int4kv

#endif  // INT4KV_BACKEND_CUDA_DECODE_BACKEND_H_
