// Host side of the decode kernels: picks the split and merge instantiations for a shape, sets
// their attributes and launches them. The kernels are in cuda_split_kernel.cu and
// cuda_merge_kernel.cu.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "backend/cuda_decode_kernels.h"
#include "backend/cuda_merge_kernel.h"
#include "backend/cuda_split_kernel.h"
#include "common/cuda_check.h"
#include "common/status_macros.h"

namespace int4kv {
namespace {

// Plans using under this share of the target chunk count release the merge's launch when
// their split blocks start rather than when they finish their loops.
constexpr int kEarlyReleasePercent = 40;

// Gives the split and merge kernels one shared-memory carveout: the smallest that keeps the
// split kernel at its full occupancy (leaving the rest to L1), and sets *blocks to that
// occupancy. A multiprocessor changes its carveout only when it is empty, so with each kernel's
// own preference a split grid launched while the previous merge's blocks were resident took
// only idle multiprocessors: block timelines (H100) showed 4 x 1024's 128 split blocks packed
// 4 deep on 35 of 132, and 8 x 1024's 256 on 66; with one carveout, over 116 and 132. The
// largest carveout spread them as well but cost group-32 steps 5% (4 x 4096: 15.0 -> 15.8 us)
// against 2% for this one (15.3 us). The merge kernels serve every variant: in a process with
// backends of several shapes, the last one created sets their carveout.
// wide_split (or nullptr): the kernel's blocks of kWideWarps KV heads, which get the same
// carveout.
absl::Status ShareCarveout(SplitFn split, SplitFn wide_split, int threads, int smem_bytes,
                           int* blocks) {
  auto set_all = [&](int percent) -> absl::Status {
    auto set = [&](const void* kernel) {
      return CudaStatus(
          cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, percent),
          "carveout");
    };
    RETURN_IF_ERROR(set(reinterpret_cast<const void*>(split)));
    if (wide_split != nullptr) RETURN_IF_ERROR(set(reinterpret_cast<const void*>(wide_split)));
    for (const MergeFn merge : AllMergeKernels()) {
      RETURN_IF_ERROR(set(reinterpret_cast<const void*>(merge)));
    }
    return CudaStatus(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, split, threads, smem_bytes),
        "occupancy query");
  };
  RETURN_IF_ERROR(set_all(cudaSharedmemCarveoutMaxShared));
  const int full_occupancy = *blocks;
  if (full_occupancy == 0) return absl::OkStatus();  // Select reports it
  cudaFuncAttributes attributes;
  CUDA_RETURN_IF_ERROR(cudaFuncGetAttributes(&attributes, split));
  int device = 0, per_sm = 0, reserved = 0;
  CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device));
  CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&reserved, cudaDevAttrReservedSharedMemoryPerBlock, device));
  // A block holds its dynamic and static shared memory and the system's reserve.
  const int64_t needed = static_cast<int64_t>(full_occupancy) *
                         (smem_bytes + static_cast<int64_t>(attributes.sharedSizeBytes) + reserved);
  // The device rounds a percentage to one of its carveout sizes; a block just over one of them
  // needs the next, which a later percentage reaches.
  for (int percent = static_cast<int>((100 * needed + per_sm - 1) / per_sm); percent < 100;
       ++percent) {
    RETURN_IF_ERROR(set_all(percent));
    if (*blocks >= full_occupancy) return absl::OkStatus();
  }
  return set_all(cudaSharedmemCarveoutMaxShared);
}

}  // namespace

absl::StatusOr<DecodeKernels> DecodeKernels::Select(int32_t head_dim, int32_t group,
                                                    int32_t kv_heads, QuantMode mode,
                                                    ParamDtype params, int32_t group_size,
                                                    bool soft_cap) {
  if (group < 1 || group > 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("query heads per KV head = ", group, " is unsupported: must be in [1, 16]"));
  }
  if (head_dim < 8 || head_dim > 256 || head_dim % 8 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("head_dim = ", head_dim,
                     " is unsupported by the cuda backend: must be a multiple of "
                     "8 in [8, 256]"));
  }
  DecodeKernels kernels;
  const bool asym = mode == QuantMode::kAsymmetric;
  const int head_tiles = group > 8 ? 2 : 1;
  const bool bf16 = params == ParamDtype::kBFloat16;
  // Caches of group size 32 to 128 at a tuned head_dim take the factored path (head_dim 256
  // only with up to 8 query heads per KV head: DescribeHeads) unless the logits are
  // soft-capped; generic head_dims always take the per-element one, and its chunk cap.
  const bool tuned = head_dim == 64 || head_dim == 128 || head_dim == 256;
  const bool factored = tuned && group_size >= 32 && group_size <= head_dim &&
                        (head_dim <= 128 || head_tiles == 1) && !soft_cap;
  const int group_chunks = factored ? group_size / 32 : 0;
  // The per-element path's copies take parameter rows of two groups or more (4 bytes): a
  // capped cache of one group a head row (group_size == head_dim), whose rows the factored
  // path stages as words, takes the generic path's checked copies.
  const bool fast = tuned && (factored || group_size < head_dim);
  kernels.max_chunk_tokens_ = factored ? 0 : kCappedChunkTokens;
  const int kernel_dim = head_dim <= 64 ? 64 : head_dim <= 128 ? 128 : 256;
  DescribeSplitKernel(kernel_dim, fast, asym, group_chunks, head_tiles, bf16, &kernels.split_,
                      &kernels.smem_bytes_);
  if (!fast) {
    kernels.variant_ = tuned ? "generic path, one group a head row" : "generic head_dim";
  } else if (kernel_dim == 64) {
    kernels.variant_ = factored ? "tuned head_dim 64, factored" : "tuned head_dim 64";
  } else if (kernel_dim == 128) {
    kernels.variant_ = factored ? "tuned head_dim 128, factored" : "tuned head_dim 128";
  } else {
    kernels.variant_ = factored ? "tuned head_dim 256, factored" : "tuned head_dim 256";
  }
  // Blocks of kWideWarps KV heads exist for the per-element tuned path at head_dim 128, where
  // they were measured and two of them fill a multiprocessor (at head_dim 64 the blocks of 4
  // may be more than 4 a multiprocessor). They serve shapes whose KV heads fill whole wide
  // blocks (every warp of a block then has a head, and the lockstep barrier counts them all),
  // but get their attributes whatever the KV heads, as the kernel is shared with backends of
  // other shapes.
  const bool wide = fast && !factored && head_dim == 128 && head_tiles == 1;
  if (wide) kernels.wide_split_ = WideSplitKernel(asym, bf16);
  kernels.warps_per_block_ = kv_heads < kMaxWarps ? kv_heads : kMaxWarps;
  kernels.head_blocks_ = (kv_heads + kMaxWarps - 1) / kMaxWarps;
  kernels.wide_head_blocks_ = (kv_heads + kWideWarps - 1) / kWideWarps;
  const int warp_smem_bytes = kernels.smem_bytes_;  // Describe gave the bytes of one warp
  kernels.smem_bytes_ = warp_smem_bytes * kernels.warps_per_block_;
  kernels.wide_smem_bytes_ = warp_smem_bytes * kWideWarps;
  // The limit belongs to the kernel, process-wide, and one instantiation serves every kv_heads:
  // it is set for the largest block of the instantiation, so that creating a backend with fewer
  // KV heads never lowers the limit that another live backend's launches need.
  CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
      kernels.split_, cudaFuncAttributeMaxDynamicSharedMemorySize, warp_smem_bytes * kMaxWarps));
  if (wide) {
    CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(kernels.wide_split_,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              kernels.wide_smem_bytes_));
  }
  int blocks = 0;
  RETURN_IF_ERROR(ShareCarveout(kernels.split_, kernels.wide_split_, 32 * kernels.warps_per_block_,
                                kernels.smem_bytes_, &blocks));
  if (blocks == 0) {
    return absl::InternalError(absl::StrCat("the split kernel (", kernels.variant_, ", ",
                                            kernels.smem_bytes_,
                                            " bytes of shared memory) cannot run on this device"));
  }
  kernels.resident_warps_per_sm_ = blocks * kernels.warps_per_block_;
  if (wide) {
    // The planner's wave is sized for the 4-warp blocks' occupancy: the wide blocks are used
    // only if they reach the same.
    int wide_blocks = 0;
    CUDA_RETURN_IF_ERROR(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &wide_blocks, kernels.wide_split_, 32 * kWideWarps, kernels.wide_smem_bytes_));
    if (wide_blocks * kWideWarps < kernels.resident_warps_per_sm_ || kv_heads % kWideWarps != 0) {
      kernels.wide_split_ = nullptr;
    }
  }
  return kernels;
}

absl::Status DecodeKernels::LaunchSplit(const SplitKernelParams& params_in, int32_t batch,
                                        int32_t capacity, int32_t target_chunks,
                                        CudaStream stream) const {
  SplitKernelParams params = params_in;
  // A step that uses fewer chunks than this leaves most of the device idle, and its merge
  // blocks may launch (and wait) from the start. Measured (H100, target 264 chunks): 64 and 96
  // chunks gained 0.5-0.9 us, 128 lost 1.3 us (8 x 1024).
  const int64_t early_chunks = static_cast<int64_t>(target_chunks) * kEarlyReleasePercent / 100;
  params.early_release_chunk = static_cast<int32_t>(std::min<int64_t>(early_chunks, capacity - 1));
  // The grid is set up, and each block reads its chunk, while the kernel before it (a
  // previous merge, say) drains.
  if (wide_split_ != nullptr && batch >= kWideSplitMinBatch) {
    return LaunchDependentKernel("SplitKvKernel launch", wide_split_,
                                 dim3(capacity * wide_head_blocks_), dim3(32 * kWideWarps),
                                 wide_smem_bytes_, stream, params);
  }
  return LaunchDependentKernel("SplitKvKernel launch", split_, dim3(capacity * head_blocks_),
                               dim3(32 * warps_per_block_), smem_bytes_, stream, params);
}

absl::Status DecodeKernels::LaunchMerge(const MergeKernelParams& params_in, int32_t batch,
                                        int32_t typical_chunks_per_row, bool fixed_order,
                                        CudaStream stream) const {
  MergeKernelParams params = params_in;
  const int columns = params.head_dim / 4;
  // A thread's chunks and the order of the combine follow from the launch shape and the row's
  // chunk count: one shape for every batch keeps a row's merge the same.
  const bool narrow =
      !fixed_order && batch <= kNarrowMergeMaxBatch && columns > kNarrowMergeColumns;
  params.columns_per_block = narrow ? kNarrowMergeColumns : columns;
  const int column_groups = (columns + params.columns_per_block - 1) / params.columns_per_block;
  // Heads per block: as many as keep one load round (kMergeBatch chunks per lane) enough for a
  // typical row, so that short rows do not leave most of a block idle.
  params.heads_per_block = 1;
  while (!fixed_order && !narrow && 2 * params.heads_per_block <= kMaxMergeHeadsPerBlock &&
         2 * params.heads_per_block <= params.q_heads &&
         2 * params.heads_per_block * columns <= kMergeThreads &&
         kMergeThreads / (2 * params.heads_per_block) / columns * kMergeBatch >=
             typical_chunks_per_row) {
    params.heads_per_block *= 2;
  }
  const int head_blocks = (params.q_heads + params.heads_per_block - 1) / params.heads_per_block;
  // The merge grid is set up while the split grid drains.
  return LaunchDependentKernel(
      "MergeKernel launch", SelectMerge(params.head_dim, narrow, params.heads_per_block),
      dim3(batch, head_blocks, column_groups), dim3(kMergeThreads), 0, stream, params);
}

}  // namespace int4kv
