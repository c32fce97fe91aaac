// The split kernel's instantiations as DecodeKernels picks them; the kernel itself (one block
// per chunk and group of KV heads, one warp per KV head) is in cuda_split_kernel.cu.
#ifndef INT4KV_BACKEND_CUDA_SPLIT_KERNEL_H_
#define INT4KV_BACKEND_CUDA_SPLIT_KERNEL_H_

#include <cstdint>

#include "backend/cuda_decode_kernels.h"

namespace int4kv {

// KV heads (one warp each) per split block. Measured against 8 and 2: small blocks spread a
// short step over more multiprocessors (1 x 4096: 12.2 -> 11.2 us against 8), and large ones
// lose nothing as long as a block still reads a few neighbouring rows of each slot together
// (2 were 3-4% slower from 262,144 tokens).
constexpr int kMaxWarps = 4;
// Blocks of kWideWarps KV heads, for large batches (DecodeKernels::LaunchSplit): one block then
// reads the rows of 8 KV heads of a slot (all of them with 8 KV heads) at once, where two
// blocks of 4 read them at different times, on different multiprocessors, each paying the
// address translation of the slot's pages.
constexpr int kWideWarps = 8;

// The instantiation in blocks of up to kMaxWarps KV heads for a cache and attention shape:
// *fn, and *warp_smem_bytes the dynamic shared memory one of its warps uses. kernel_dim: the
// padded head_dim (64, 128 or 256); fast: head_dim == kernel_dim; group_chunks: 0, or the
// factored path's 32-dim chunks per quantization group (only with fast, and at most the row's
// chunks); head_tiles: 1 for up to 8 query heads per KV head, else 2. Shapes nothing covers
// are rejected by DecodeKernels::Select before this is reached.
void DescribeSplitKernel(int kernel_dim, bool fast, bool asym, int group_chunks, int head_tiles,
                         bool bf16_params, SplitFn* fn, int32_t* warp_smem_bytes);

// The per-element tuned instantiation of head_dim 128 with one head tile, in blocks of
// kWideWarps KV heads (two such blocks fill a multiprocessor).
SplitFn WideSplitKernel(bool asym, bool bf16_params);

}  // namespace int4kv

#endif  // INT4KV_BACKEND_CUDA_SPLIT_KERNEL_H_
