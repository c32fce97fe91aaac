// Merge kernel: block (row, head block, column group) combines a row's normalized partial
// outputs, weighted by their log2-sum-exps, into the row's output and, when asked, its
// log-sum-exp (see MergeBody).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <iterator>
#include <vector>

#include "backend/cuda_decode_kernels.h"
#include "backend/cuda_kernel_primitives.cuh"
#include "backend/cuda_merge_kernel.h"

namespace int4kv {
namespace {

constexpr int kCombineUnroll = 8;  // lanes of a column combined per unrolled step

// Invalidates, without write-back, the L2 lines of the partial outputs of heads [first_head,
// first_head + heads_per_block) and float4 columns [first_column, first_column + columns) of a
// row's chunks: the lines one merge block reads and no other does. Only whole lines qualify:
// head rows and column spans must be multiples of 128 bytes (head_dim a multiple of 32,
// columns of 8), else nothing is dropped.
template <int kHeads>
__device__ __forceinline__ void DiscardPartials(const MergeKernelParams& p, const RowWork& work,
                                                int first_head, int first_column, int columns) {
  constexpr int kLineFloats = 32;  // 128 bytes
  if (p.head_dim % kLineFloats != 0 || columns % (kLineFloats / 4) != 0) return;
  // A specialized block indexes its lines by kHeads and skips heads past q_heads.
  const int heads = kHeads > 0 ? kHeads : min(p.heads_per_block, p.q_heads - first_head);
  const int lines_per_head = columns * 4 / kLineFloats;
  const int lines = work.num_chunks * heads * lines_per_head;
  for (int i = threadIdx.x; i < lines; i += blockDim.x) {
    const int line = i % lines_per_head, head = first_head + (i / lines_per_head) % heads;
    if (kHeads > 0 && head >= p.q_heads) continue;
    const int chunk = work.first_chunk + i / (lines_per_head * heads);
    const float* address = p.partial_out +
                           (static_cast<int64_t>(chunk) * p.q_heads + head) * p.head_dim +
                           first_column * 4 + line * kLineFloats;
    asm volatile("discard.global.L2 [%0], 128;" ::"l"(address) : "memory");
  }
}

// Block (row, head block, column group) merges heads [y H, y H + H) of its row (H =
// heads_per_block), each with kMergeThreads / H threads. With C float4 columns per head
// (columns_per_block when a narrow grid's row has many chunks, with H = 1; else head_dim / 4
// in column group 0 alone), thread i of a head owns column group * C + i % C of chunks i / C,
// i / C + lanes, ... (lanes = threads per head / C). It keeps its own running max and
// rescales per batch of kMergeBatch chunks (whose loads are all in flight together); the
// block then combines the threads of a column.
// kHeadColumns / kHeads / kColumns: the launch's float4 columns of a head, heads a block and
// columns this row's block merges, when known at compile time (0: worked out from p and the
// row), so that the specialized kernels index without divisions.
template <int kHeadColumns, int kHeads, int kColumns>
__device__ __forceinline__ void MergeBody(const MergeKernelParams& p, const RowWork& work,
                                          bool discard, float4* column_sums, float* weights,
                                          float* maxima) {
  const int row = blockIdx.x;
  const int head_columns = kHeadColumns > 0 ? kHeadColumns : p.head_dim / 4;
  const int heads_per_block = kHeads > 0 ? kHeads : p.heads_per_block;
  const int head_dim = kHeadColumns > 0 ? 4 * kHeadColumns : p.head_dim;
  // Column groups pay off only for a row with more chunks than one block spanning the whole
  // head loads at once (kMergeBatch per thread); group 0 alone merges any other row.
  const bool grouped = kColumns > 0
                           ? kColumns < head_columns
                           : p.columns_per_block < head_columns &&
                                 work.num_chunks > kMergeBatch * (kMergeThreads / head_columns);
  if (!grouped && blockIdx.z > 0) return;
  const int columns = kColumns > 0 ? kColumns : grouped ? p.columns_per_block : head_columns;
  const int head_threads = kMergeThreads / heads_per_block;
  const int head = blockIdx.y * heads_per_block + threadIdx.x / head_threads;
  const int head_thread = threadIdx.x % head_threads;
  const int head_base = threadIdx.x - head_thread;  // this head's first thread in the block
  const int lanes = head_threads / columns;         // chunks processed side by side
  const int column = (grouped ? blockIdx.z * columns : 0) + head_thread % columns;  // in the head
  const int chunk_lane = head_thread / columns;
  const bool column_in_head = column < head_columns && head < p.q_heads;
  // A kernel launched next as a programmatic dependent (the next layer's split kernel, in
  // decode_bench's chain of layer-runs) may start its blocks now; they wait before touching
  // anything this kernel reads or writes. A kernel launched without that attribute (a model's
  // output projection, say) still starts only once this grid has finished.
  asm volatile("griddepcontrol.launch_dependents;");
  // Launched as a programmatic dependent of the split kernel: what is above overlaps its
  // tail; the partials are read only once it has finished and they are visible.
  asm volatile("griddepcontrol.wait;" ::: "memory");

  float m = -INFINITY, total = 0.0f;
  float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (chunk_lane < lanes && column_in_head) {
    for (int k0 = chunk_lane; k0 < work.num_chunks; k0 += kMergeBatch * lanes) {
      float lse[kMergeBatch];
      float4 x[kMergeBatch];
#pragma unroll
      for (int j = 0; j < kMergeBatch; ++j) {
        const int k = k0 + j * lanes;
        lse[j] = -INFINITY;
        x[j] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (k < work.num_chunks) {
          const int64_t chunk_head = static_cast<int64_t>(work.first_chunk + k) * p.q_heads + head;
          lse[j] = p.partial_lse[chunk_head];
          x[j] = reinterpret_cast<const float4*>(p.partial_out + chunk_head * head_dim)[column];
        }
      }
      float m_new = m;
#pragma unroll
      for (int j = 0; j < kMergeBatch; ++j) m_new = fmaxf(m_new, lse[j]);  // finite: k0 is valid
      const float rescale = Exp2(m - m_new);
      sum.x *= rescale, sum.y *= rescale, sum.z *= rescale, sum.w *= rescale;
      total *= rescale;
#pragma unroll
      for (int j = 0; j < kMergeBatch; ++j) {
        const float weight = Exp2(lse[j] - m_new);  // 0 past the row's chunks
        sum.x += weight * x[j].x, sum.y += weight * x[j].y;
        sum.z += weight * x[j].z, sum.w += weight * x[j].w;
        total += weight;
      }
      m = m_new;
    }
  }
  column_sums[threadIdx.x] = sum;
  weights[threadIdx.x] = total;
  maxima[threadIdx.x] = m;
  __syncthreads();
  // Every partial this block merges is now in registers or shared memory.
  if (discard) {
    DiscardPartials<kHeads>(p, work, blockIdx.y * heads_per_block,
                            grouped ? blockIdx.z * columns : 0, columns);
  }
  if (head_thread >= columns || !column_in_head) return;
  // Both walks over the column's lanes are unrolled by kCombineUnroll so that their
  // shared-memory reads go out together instead of one dependent trip per lane: this combine
  // lies between the partials' arrival and the output, on every step's path to the next
  // kernel's release.
  float m_all = -INFINITY;
#pragma unroll(kCombineUnroll)
  for (int lane = 0; lane < lanes; ++lane) {
    m_all = fmaxf(m_all, maxima[head_base + lane * columns + head_thread]);
  }
  float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float all = 0.0f;
  if (work.num_chunks > 0) {  // else every maximum is -inf, and the row stays zero
#pragma unroll(kCombineUnroll)
    for (int lane = 0; lane < lanes; ++lane) {
      const int t = head_base + lane * columns + head_thread;
      const float weight = Exp2(maxima[t] - m_all);  // 0 for lanes that had no chunk
      const float4 x = column_sums[t];
      acc.x += weight * x.x, acc.y += weight * x.y, acc.z += weight * x.z, acc.w += weight * x.w;
      all += weight * weights[t];
    }
  }
  // Rows that attend nothing (no chunks: padded, or first_token == seq_len) get zeros.
  const float inv = work.num_chunks > 0 ? Reciprocal(all) : 0.0f;  // all >= 1 then
  // The head's log-sum-exp, from its first column's thread (every column has the same m_all
  // and all): log2 units back to natural ones.
  if (p.lse != nullptr && column == 0) {
    constexpr float kLn2 = 0.6931471805599453f;
    p.lse[static_cast<int64_t>(row) * p.q_heads + head] =
        work.num_chunks > 0 ? (m_all + Log2(all)) * kLn2 : -INFINITY;
  }
  const float values[4] = {acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv};
  const int64_t out_base =
      static_cast<int64_t>(row) * p.out_row_stride + head * head_dim + 4 * column;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if (p.out_is_bf16) {
      static_cast<__nv_bfloat16*>(p.out)[out_base + i] = __float2bfloat16_rn(values[i]);
    } else {
      static_cast<__half*>(p.out)[out_base + i] = __float2half_rn(values[i]);
    }
  }
}

// One merge block: its shared scratch (a thread's column sums, weight and running max), its
// row's work and discard flag (both written by Plan's copy, not by the split kernel), and
// MergeBody. kNarrow: a narrow launch of a tuned head_dim (kHeads 1), in which a row with more
// chunks than a whole-head block loads at once is merged kNarrowMergeColumns columns a block
// and any other row by column group 0 alone.
template <int kHeadColumns, int kHeads, bool kNarrow>
__device__ __forceinline__ void MergeBlock(const MergeKernelParams& p) {
  __shared__ float4 column_sums[kMergeThreads];
  __shared__ float weights[kMergeThreads];
  __shared__ float maxima[kMergeThreads];
  const RowWork work = p.rows[blockIdx.x];
  const bool discard = *p.discard_partials != 0;
  if constexpr (kNarrow) {
    if (work.num_chunks > kMergeBatch * (kMergeThreads / kHeadColumns)) {
      MergeBody<kHeadColumns, kHeads, kNarrowMergeColumns>(p, work, discard, column_sums, weights,
                                                           maxima);
      return;
    }
  }
  MergeBody<kHeadColumns, kHeads, kHeadColumns>(p, work, discard, column_sums, weights, maxima);
}

// The merge for shapes without a specialization: every size read from p.
__global__ void __launch_bounds__(kMergeThreads) MergeKernel(MergeKernelParams p) {
  MergeBlock<0, 0, false>(p);
}

// Tuned head_dims (4 * kHeadColumns), a launch that is not narrow: kHeads heads a block, each
// over its whole head.
template <int kHeadColumns, int kHeads>
__global__ void __launch_bounds__(kMergeThreads) MergeKernelTuned(MergeKernelParams p) {
  MergeBlock<kHeadColumns, kHeads, false>(p);
}

// Tuned head_dims, narrow grid: one head a block, kNarrowMergeColumns columns of it for a row of
// many chunks.
template <int kHeadColumns>
__global__ void __launch_bounds__(kMergeThreads) MergeKernelTunedNarrow(MergeKernelParams p) {
  MergeBlock<kHeadColumns, 1, true>(p);
}

// Merge kernels for the tuned head_dims 64, 128 and 256, by launch: [0] narrow, [1 + log2 H] H
// heads a block (the shapes LaunchMerge can choose; null where H heads of a thread a column
// would not fit a block). Every other head_dim uses MergeKernel.
constexpr int kTunedMergeDims[] = {64, 128, 256};
constexpr int kMergeLaunchShapes = 5;  // narrow, and 1, 2, 4 or 8 heads a block
constexpr MergeFn kTunedMerges[std::size(kTunedMergeDims)][kMergeLaunchShapes] = {
    {MergeKernelTunedNarrow<16>, MergeKernelTuned<16, 1>, MergeKernelTuned<16, 2>,
     MergeKernelTuned<16, 4>, MergeKernelTuned<16, 8>},
    {MergeKernelTunedNarrow<32>, MergeKernelTuned<32, 1>, MergeKernelTuned<32, 2>,
     MergeKernelTuned<32, 4>, MergeKernelTuned<32, 8>},
    {MergeKernelTunedNarrow<64>, MergeKernelTuned<64, 1>, MergeKernelTuned<64, 2>,
     MergeKernelTuned<64, 4>, nullptr},
};

}  // namespace

MergeFn SelectMerge(int head_dim, bool narrow, int heads_per_block) {
  for (size_t d = 0; d < std::size(kTunedMergeDims); ++d) {
    if (head_dim != kTunedMergeDims[d]) continue;
    const int slot = narrow ? 0 : 1 + __builtin_ctz(static_cast<unsigned>(heads_per_block));
    if (slot < kMergeLaunchShapes && kTunedMerges[d][slot] != nullptr) return kTunedMerges[d][slot];
  }
  return MergeKernel;
}

std::vector<MergeFn> AllMergeKernels() {
  std::vector<MergeFn> kernels = {MergeKernel};
  for (const auto& dim : kTunedMerges) {
    for (const MergeFn merge : dim) {
      if (merge != nullptr) kernels.push_back(merge);
    }
  }
  return kernels;
}

}  // namespace int4kv
