// The CUDA decode-attention kernels (split-KV flash decoding over the INT4 cache) and their
// launch helpers. Host code includes this header; the kernels live in cuda_split_kernel.cu and
// cuda_merge_kernel.cu, their selection and launches in cuda_decode_kernels.cu.
//
// Split kernel: one block per (chunk, group of up to 4 KV heads; 8 in steps of
// kWideSplitMinBatch rows and more where the kernel has such blocks), one warp per KV head. The
// warp attends its KV head's query heads over the chunk's tokens and writes a normalized
// partial output and its log2-sum-exp. Merge kernel: grid (batch, head blocks, column groups)
// combines a row's partials into the output. Both grids depend only on the batch size.
#ifndef INT4KV_BACKEND_CUDA_DECODE_KERNELS_H_
#define INT4KV_BACKEND_CUDA_DECODE_KERNELS_H_

#include <algorithm>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "backend/decode_plan.h"
#include "common/cuda_stream.h"
#include "common/dtype.h"
#include "kv_cache/int4_layout.h"

namespace int4kv {

// The split kernel loads q 16 bytes at a time: Run refuses a q less aligned.
constexpr int kQueryAlignmentBytes = 16;
// The split kernel copies codes and parameters up to 16 bytes at a time from the pools' bases
// on: backend creation refuses pools less aligned (a misaligned copy faults and leaves the
// CUDA context unusable).
constexpr int kPoolAlignmentBytes = 16;

// Steps of at least this many rows run the split kernel in blocks of 8 KV heads rather than 4
// where it has them (DecodeKernels::LaunchSplit): a block then reads the rows of 8 KV heads of a
// slot together, and in a large step with scattered page tables (kLockstepMinStepBytes) its warps
// keep together. The block shape may depend on the batch, never on lengths. Measured on H200s
// against blocks of 4 (docs/TUNING_LOG.md, rows 38 and 39): random tables 32 x 65536 7-9%
// faster, 48 x 65536 10-12%, 64 x 65536 9%, 128 x 65536 13-14%, 48 to 128 x 16384 5-10%
// (asymmetric 64 and 128 x 65536 20-24%, group size 16 4-12%); contiguous tables within 3%;
// 32 to 64 x 1024 1-2% slower (group size 16: 3-4%); 32 to 64 x 4096 within 1% and 32 x 16384
// within 3% (group size 16: 2%, 48 x 16384 2-5%); 128 x 4096 random in two modes, as fast or
// 5-9% slower. Below 32 rows a short step loses more (16 x 1024 5% slower, group size 16 6%;
// row (dv)) and the long random ones gain less surely (16 x 65536 no faster than one card's
// fast mode); at 1 x 4096 a wide block leaves most multiprocessors idle (46% slower, row (cu)).
constexpr int32_t kWideSplitMinBatch = 32;
// Steps that read at least this many bytes of a layer's cache keep a wide block's warps in
// lockstep where the page table scatters the chunk. Below it a random table costs little
// (address translation reaches the pages), and the barrier only slows the block (64 x 1024:
// 3% slower with it).
constexpr int64_t kLockstepMinStepBytes = int64_t{1} << 30;

struct SplitKernelParams {
  KvCacheView cache;            // device pools
  const int32_t* req_to_token;  // device [max_requests][req_to_token_stride]
  int64_t req_to_token_stride;
  // device [batch][q_heads][head_dim] in rows q_row_stride apart, fp16 or bf16;
  // kQueryAlignmentBytes aligned
  const void* q;
  int64_t q_row_stride;  // elements between q's rows (a multiple of 8)
  int32_t q_is_bf16;
  int32_t layer;
  int32_t q_heads;
  int32_t kv_heads;
  int32_t group;  // query heads per KV head, 1..16
  int32_t head_dim;
  int32_t log2_group_size;  // log2 of the cache's group_size
  float scale_log2;         // softmax scale * log2(e)
  // Logit soft cap c x log2(e), 0 for none (AttentionShape.logit_soft_cap), and
  // 2 x scale_log2 / c.
  float soft_cap_log2;
  float soft_cap_exp_scale;
  const ChunkWork* chunks;  // device [capacity]
  // Device flag written by Plan's copy: nonzero when the step reads at least
  // kLockstepMinStepBytes of a layer's cache.
  const int32_t* large_step;
  // Set by LaunchSplit: if this chunk is empty, the merge's launch is released early.
  int32_t early_release_chunk;
  float* partial_out;  // device [capacity][q_heads][head_dim]
  float* partial_lse;  // device [capacity][q_heads], log2 domain
};

struct MergeKernelParams {
  const RowWork* rows;  // device [batch]
  const float* partial_out;
  const float* partial_lse;
  // Device flag written by Plan's copy: nonzero when the step reads more of the cache than L2
  // holds, so that the partials would be evicted, and written back to DRAM, before the next
  // step overwrites them; the merge then drops each partial from L2 once it has read it.
  const int32_t* discard_partials;
  void* out;               // device [batch][q_heads][head_dim] in rows out_row_stride apart
  int64_t out_row_stride;  // elements between out's rows
  float* lse;              // device [batch][q_heads], natural log; nullptr: not written
  int32_t out_is_bf16;
  int32_t q_heads;
  int32_t head_dim;
  int32_t columns_per_block;  // float4 columns of a head per merge block; set by LaunchMerge
  int32_t heads_per_block;    // heads of a row per merge block; set by LaunchMerge
};

// A split or merge kernel instantiation, as host code launches it.
using SplitFn = void (*)(SplitKernelParams);
using MergeFn = void (*)(MergeKernelParams);

// The kernel instantiation for one cache/attention shape, chosen once at backend creation.
class DecodeKernels {
 public:
  // Fails (InvalidArgument) for shapes no instantiation covers. Sets kernel attributes, which
  // are process-wide: the split kernel's dynamic shared-memory limit is set for its largest
  // block, so that another live backend's launches keep working; the shared-memory carveout
  // of the split and merge kernels is the one of the backend created last. That is a matter of
  // speed only: a backend of another head_dim created later may leave an earlier one's split
  // and merge kernels on different carveouts, which spreads a step's blocks less well
  // (docs/TUNING_LOG.md, row 12).
  // group_size: the cache's quantization group size. soft_cap: the shape caps its logits
  // (AttentionShape.logit_soft_cap), which only the per-element path does.
  static absl::StatusOr<DecodeKernels> Select(int32_t head_dim, int32_t group, int32_t kv_heads,
                                              QuantMode mode, ParamDtype params, int32_t group_size,
                                              bool soft_cap = false);

  // The chunks the planner aims to run at once (its target_chunks): enough to give every
  // resident warp slot of `multiprocessors` one (chunk, KV head). 264 for 8 KV heads on an
  // H100 or H200 at 16 resident warps a multiprocessor.
  int32_t ChunksPerWave(int32_t multiprocessors, int32_t kv_heads) const {
    return std::max<int32_t>(1, multiprocessors * resident_warps_per_sm_ / kv_heads);
  }
  const char* variant() const { return variant_; }
  // Whether steps of kWideSplitMinBatch rows and more run in blocks of 8 KV heads: the
  // per-element tuned path at head_dim 128 (up to 8 query heads per KV head, group sizes 8 and
  // 16) with KV heads a multiple of 8, where the device holds two such blocks a multiprocessor.
  bool has_wide_blocks() const { return wide_split_ != nullptr; }
  // The planner's chunk-length cap for this split kernel (PlanDecode; 0: none). Measured per
  // path on an H200 (docs/TUNING_LOG.md, rows 35 and 36): the per-element path (group sizes 8
  // and 16, and the generic head_dims) takes kCappedChunkTokens, which made group 8 with random
  // page tables 5-6% faster at 64 x 65536 (asymmetric 9-11%, group 16 2.5%) and, at 2048 tokens
  // rather than 4096, steps of 1M-2M tokens 2-8% faster; the factored path (group sizes 32-128)
  // takes none, as the cap gained it at most 1% and cost short steps up to 3% in the wider grid.
  int32_t max_chunk_tokens() const { return max_chunk_tokens_; }

  // batch: rows of the step's plan; capacity: chunks of the grid; target_chunks: the planner's
  // one-wave chunk count.
  absl::Status LaunchSplit(const SplitKernelParams& params, int32_t batch, int32_t capacity,
                           int32_t target_chunks, CudaStream stream) const;
  // typical_chunks_per_row: about how many chunks the plan gives a row of this batch; rows
  // with more are still merged right, only with fewer threads each. fixed_order: every row is
  // merged by one block of its own over whole heads, one head a block, whatever the batch, so
  // that a row's partials are combined in an order that depends on its chunk count alone
  // (batch-invariant plans); typical_chunks_per_row is then unused.
  absl::Status LaunchMerge(const MergeKernelParams& params, int32_t batch,
                           int32_t typical_chunks_per_row, bool fixed_order,
                           CudaStream stream) const;

 private:
  SplitFn split_ = nullptr;
  int32_t smem_bytes_ = 0;
  int32_t warps_per_block_ = 0;
  int32_t head_blocks_ = 0;
  // The same kernel in blocks of 8 KV heads, for large batches (LaunchSplit); nullptr where
  // there is none.
  SplitFn wide_split_ = nullptr;
  int32_t wide_smem_bytes_ = 0;
  int32_t wide_head_blocks_ = 0;
  // Split-kernel warps (one per KV head and chunk) resident per multiprocessor.
  int32_t resident_warps_per_sm_ = 0;
  int32_t max_chunk_tokens_ = 0;
  const char* variant_ = "";
};

}  // namespace int4kv

#endif  // INT4KV_BACKEND_CUDA_DECODE_KERNELS_H_
