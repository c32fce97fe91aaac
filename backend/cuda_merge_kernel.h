// The merge kernel's launch constants and instantiations as DecodeKernels::LaunchMerge picks
// them; the kernels (a row's partials combined into its output) are in cuda_merge_kernel.cu.
#ifndef INT4KV_BACKEND_CUDA_MERGE_KERNEL_H_
#define INT4KV_BACKEND_CUDA_MERGE_KERNEL_H_

#include <vector>

#include "backend/cuda_decode_kernels.h"

namespace int4kv {

constexpr int kMergeThreads = 256;
constexpr int kMergeBatch = 8;  // partials a thread loads before it uses any
// Up to this batch, rows can have hundreds of chunks each: the merge grid then has a block per
// kNarrowMergeColumns float4 columns of a head, so that more threads share such a row's chunks.
constexpr int kNarrowMergeMaxBatch = 4;
constexpr int kNarrowMergeColumns = 8;
// Larger batches leave each row a few chunks: one block then merges several heads of a row.
constexpr int kMaxMergeHeadsPerBlock = 8;

// The merge kernel for a launch of LaunchMerge's shape (narrow grid, or heads_per_block heads a
// block, a power of two up to kMaxMergeHeadsPerBlock).
MergeFn SelectMerge(int head_dim, bool narrow, int heads_per_block);

// Every merge kernel SelectMerge can return, for attributes they all take.
std::vector<MergeFn> AllMergeKernels();

}  // namespace int4kv

#endif  // INT4KV_BACKEND_CUDA_MERGE_KERNEL_H_
