#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "common/cuda_check.h"
#include "server/cuda/llama_kernels.h"

namespace int4kv {
namespace {

constexpr int kThreads = 256;      // elementwise kernels
constexpr int kRowThreads = 1024;  // one-block-per-row kernels (RMSNorm, argmax)
constexpr int64_t kMaxBlocks = 1 << 16;

int GridFor(int64_t work) {
  const int64_t blocks = (work + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

int RowGrid(int32_t rows) { return rows < kMaxBlocks ? rows : static_cast<int>(kMaxBlocks); }

template <typename T>
struct Tag {
  using type = T;
};

// Calls fn(Tag<T>{}) for the half type named by dtype; the one place a dtype becomes a type.
template <typename Fn>
absl::Status DispatchHalf(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat16:
      return fn(Tag<__half>{});
    case DType::kBFloat16:
      return fn(Tag<__nv_bfloat16>{});
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("dtype ", DTypeName(dtype),
                       " is invalid for the CUDA model: must be float16 or bfloat16"));
  }
}

template <typename T>
__device__ __forceinline__ float ToFloat(T value);
template <>
__device__ __forceinline__ float ToFloat<__half>(__half value) {
  return __half2float(value);
}
template <>
__device__ __forceinline__ float ToFloat<__nv_bfloat16>(__nv_bfloat16 value) {
  return __bfloat162float(value);
}

template <typename T>
__device__ __forceinline__ T FromFloat(float value);
template <>
__device__ __forceinline__ __half FromFloat<__half>(float value) {
  return __float2half_rn(value);
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float value) {
  return __float2bfloat16_rn(value);
}

template <typename T>
__global__ void ConvertFloatKernel(const float* in, int64_t count, T* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = FromFloat<T>(in[i]);
  }
}

template <typename T>
__global__ void EmbeddingKernel(const T* table, const TokenMeta* meta, int32_t rows, int32_t dim,
                                float* x) {
  const int64_t total = int64_t{rows} * dim;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / dim;
    const int64_t d = i % dim;
    x[i] = ToFloat(table[int64_t{meta[r].token} * dim + d]);
  }
}

// Sum over the block's threads (a multiple of 32, at most 1024) in a fixed order, returned
// to every thread.
__device__ __forceinline__ float BlockSum(float value, float* shared /* [32] */) {
  for (int offset = 16; offset > 0; offset /= 2) {
    value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.0f;
    for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) total += shared[w];
    shared[0] = total;
  }
  __syncthreads();
  const float total = shared[0];
  __syncthreads();  // shared is reused by the next row
  return total;
}

// One block of kRowThreads per output row. A row is a few KB: the unrolled loops keep several
// loads in flight per thread, as one block per row is latency-bound at batch 1.
template <typename T>
__global__ void RmsNormKernel(const float* x, const TokenMeta* meta, const float* weight,
                              int32_t rows, int32_t dim, float eps, T* out) {
  __shared__ float partial[32];
  for (int32_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t source = meta != nullptr ? meta[r].logit_row : r;
    const float* xr = x + source * dim;
    float sum = 0.0f;
#pragma unroll 4
    for (int32_t d = threadIdx.x; d < dim; d += blockDim.x) sum += xr[d] * xr[d];
    const float mean_square = BlockSum(sum, partial) / static_cast<float>(dim);
    const float inv = 1.0f / sqrtf(mean_square + eps);
    T* outr = out + int64_t{r} * dim;
#pragma unroll 4
    for (int32_t d = threadIdx.x; d < dim; d += blockDim.x) {
      outr[d] = FromFloat<T>(xr[d] * inv * weight[d]);
    }
  }
}

// One thread per (row, head of Q or K, pair).
template <typename T>
__global__ void RopeKernel(T* qkv, const TokenMeta* meta, int32_t rows, int32_t q_heads,
                           int32_t kv_heads, int32_t head_dim, float theta, T* q_out) {
  const int32_t pairs = head_dim / 2;
  const int32_t heads = q_heads + kv_heads;  // rotated heads: all of Q, then all of K
  const int64_t qkv_dim = int64_t{q_heads + 2 * kv_heads} * head_dim;
  const int64_t q_dim = int64_t{q_heads} * head_dim;
  const int64_t total = int64_t{rows} * heads * pairs;
  for (int64_t item = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; item < total;
       item += int64_t{gridDim.x} * blockDim.x) {
    const int32_t pair = static_cast<int32_t>(item % pairs);
    const int32_t head = static_cast<int32_t>((item / pairs) % heads);
    const int64_t r = item / (int64_t{pairs} * heads);
    const int32_t i = 2 * pair;
    const float frequency =
        1.0f / powf(theta, static_cast<float>(i) / static_cast<float>(head_dim));
    const float angle = static_cast<float>(meta[r].position) * frequency;
    const float c = cosf(angle), s = sinf(angle);
    T* source = qkv + r * qkv_dim + int64_t{head} * head_dim + i;
    T* dest = head < q_heads ? q_out + r * q_dim + int64_t{head} * head_dim + i : source;
    const float a = ToFloat(source[0]), b = ToFloat(source[1]);
    dest[0] = FromFloat<T>(a * c - b * s);
    dest[1] = FromFloat<T>(a * s + b * c);
  }
}

template <typename T>
__global__ void SwiGluKernel(const T* gate_up, int32_t rows, int32_t hidden, T* out) {
  const int64_t total = int64_t{rows} * hidden;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / hidden;
    const int64_t j = i % hidden;
    const float g = ToFloat(gate_up[r * 2 * hidden + j]);
    const float u = ToFloat(gate_up[r * 2 * hidden + hidden + j]);
    out[i] = FromFloat<T>(g / (1.0f + expf(-g)) * u);
  }
}

// The total order of ArgMax: a valid index beats -1, a number beats NaN, then the larger value,
// then the lower index; among NaNs the higher index (host ArgMax ends on the last NaN).
__device__ __forceinline__ bool Better(float a, int32_t ia, float b, int32_t ib) {
  if (ib < 0) return ia >= 0;
  if (ia < 0) return false;
  const bool a_nan = isnan(a), b_nan = isnan(b);
  if (a_nan != b_nan) return b_nan;
  if (a_nan) return ia > ib;
  if (a != b) return a > b;
  return ia < ib;
}

// One block of kRowThreads per row; each thread scans its elements kArgMaxUnroll at a time
// (loads first, then compares), then a shared-memory tree picks the block's best.
constexpr int kArgMaxUnroll = 4;

__global__ void ArgMaxKernel(const float* logits, int32_t rows, int32_t vocab, int32_t* out) {
  __shared__ float best_value[kRowThreads];
  __shared__ int32_t best_index[kRowThreads];
  for (int32_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* row = logits + int64_t{r} * vocab;
    float value = 0.0f;
    int32_t index = -1;
    for (int32_t base = threadIdx.x; base < vocab; base += kArgMaxUnroll * kRowThreads) {
      float v[kArgMaxUnroll];
#pragma unroll
      for (int k = 0; k < kArgMaxUnroll; ++k) {
        const int32_t j = base + k * kRowThreads;
        v[k] = j < vocab ? row[j] : 0.0f;
      }
#pragma unroll
      for (int k = 0; k < kArgMaxUnroll; ++k) {
        const int32_t j = base + k * kRowThreads;
        if (j < vocab && Better(v[k], j, value, index)) {
          value = v[k];
          index = j;
        }
      }
    }
    best_value[threadIdx.x] = value;
    best_index[threadIdx.x] = index;
    __syncthreads();
    for (int stride = kRowThreads / 2; stride > 0; stride /= 2) {
      if (threadIdx.x < stride) {
        const float other = best_value[threadIdx.x + stride];
        const int32_t other_index = best_index[threadIdx.x + stride];
        if (Better(other, other_index, best_value[threadIdx.x], best_index[threadIdx.x])) {
          best_value[threadIdx.x] = other;
          best_index[threadIdx.x] = other_index;
        }
      }
      __syncthreads();
    }
    // A row of NaN alone has no token: -1, as the host ArgMax gives.
    if (threadIdx.x == 0) out[r] = isnan(best_value[0]) ? -1 : best_index[0];
    __syncthreads();
  }
}

__device__ __forceinline__ uint64_t GlobalTimer() {
  uint64_t now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  return now;
}

__global__ void SpinKernel(int64_t nanoseconds) {
  const uint64_t start = GlobalTimer();
  while (GlobalTimer() - start < static_cast<uint64_t>(nanoseconds)) __nanosleep(1000);
}

}  // namespace

absl::Status LaunchConvertFloat(const float* in, int64_t count, DType dtype, void* out,
                                CudaStream stream) {
  if (count == 0) return absl::OkStatus();
  return DispatchHalf(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return LaunchKernel("ConvertFloatKernel launch", ConvertFloatKernel<T>, dim3(GridFor(count)),
                        dim3(kThreads), 0, stream, in, count, static_cast<T*>(out));
  });
}

absl::Status LaunchEmbedding(const void* table, DType dtype, const TokenMeta* meta, int32_t rows,
                             int32_t dim, float* x, CudaStream stream) {
  if (rows == 0) return absl::OkStatus();
  return DispatchHalf(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return LaunchKernel("EmbeddingKernel launch", EmbeddingKernel<T>,
                        dim3(GridFor(int64_t{rows} * dim)), dim3(kThreads), 0, stream,
                        static_cast<const T*>(table), meta, rows, dim, x);
  });
}

absl::Status LaunchRmsNorm(const float* x, const TokenMeta* meta, const float* weight, int32_t rows,
                           int32_t dim, float eps, DType dtype, void* out, CudaStream stream) {
  if (rows == 0) return absl::OkStatus();
  return DispatchHalf(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return LaunchKernel("RmsNormKernel launch", RmsNormKernel<T>, dim3(RowGrid(rows)),
                        dim3(kRowThreads), 0, stream, x, meta, weight, rows, dim, eps,
                        static_cast<T*>(out));
  });
}

absl::Status LaunchRope(void* qkv, const TokenMeta* meta, int32_t rows, int32_t q_heads,
                        int32_t kv_heads, int32_t head_dim, float theta, DType dtype, void* q_out,
                        CudaStream stream) {
  if (rows == 0) return absl::OkStatus();
  if (head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("RoPE head_dim = ", head_dim, " must be even"));
  }
  const int64_t work = int64_t{rows} * (q_heads + kv_heads) * (head_dim / 2);
  return DispatchHalf(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return LaunchKernel("RopeKernel launch", RopeKernel<T>, dim3(GridFor(work)), dim3(kThreads), 0,
                        stream, static_cast<T*>(qkv), meta, rows, q_heads, kv_heads, head_dim,
                        theta, static_cast<T*>(q_out));
  });
}

absl::Status LaunchSwiGlu(const void* gate_up, int32_t rows, int32_t hidden, DType dtype, void* out,
                          CudaStream stream) {
  if (rows == 0) return absl::OkStatus();
  return DispatchHalf(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    return LaunchKernel("SwiGluKernel launch", SwiGluKernel<T>,
                        dim3(GridFor(int64_t{rows} * hidden)), dim3(kThreads), 0, stream,
                        static_cast<const T*>(gate_up), rows, hidden, static_cast<T*>(out));
  });
}

absl::Status LaunchArgMax(const float* logits, int32_t rows, int32_t vocab, int32_t* out,
                          CudaStream stream) {
  if (rows == 0) return absl::OkStatus();
  return LaunchKernel("ArgMaxKernel launch", ArgMaxKernel, dim3(RowGrid(rows)), dim3(kRowThreads),
                      0, stream, logits, rows, vocab, out);
}

absl::Status LaunchSpin(int64_t nanoseconds, CudaStream stream) {
  return LaunchKernel("SpinKernel launch", SpinKernel, dim3(1), dim3(1), 0, stream, nanoseconds);
}

}  // namespace int4kv
