#include "backend/read_stream.h"

namespace int4kv {
namespace {

// Blocks per multiprocessor and threads per block: 8 x 256, the most threads a multiprocessor
// holds, each with 8 loads of 16 bytes in flight (256 KB a multiprocessor). On an H100, reads
// of 6.4 MB to 1 GiB streamed fastest with that many bytes in flight; half of it was up to 8%
// slower, a quarter of it up to 30%.
constexpr int kBlocksPerSm = 8;
constexpr int kThreads = 256;

// Reads units [0, units) of `from` with every thread of the grid, 8 loads in flight a thread.
__device__ __forceinline__ uint32_t XorOfStream(const uint4* from, int64_t units) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  uint32_t sum = 0;
#pragma unroll 8
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < units;
       i += stride) {
    const uint4 v = __ldcs(from + i);
    sum ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  return sum;
}

__global__ void __launch_bounds__(kThreads)
    ReadStreamKernel(const uint4* a, int64_t a_units, const uint4* b, int64_t b_units,
                     uint32_t* sink) {
  const uint32_t sum = XorOfStream(a, a_units) ^ XorOfStream(b, b_units);
  if (sum == 0x9e3779b9u) *sink = sum;  // a use of the loads the compiler cannot drop
}

// Thread i of the grid reads units i, i + stride, ... of the step's units, token by token: a
// token's data row (data_units of 16 bytes), then its parameter row (param_units). Each pass
// reads kGatherInFlight slot numbers, then their units, so that a thread keeps that many loads
// of each kind in flight; consecutive threads read consecutive units of a row. With a checksum,
// the block's wrapping sum of the 32-bit words it read is added to it.
//
// 4 in flight, not the plain read's 8: on an H100 (2026-11-28, decode_bench at 1-64 x 4096 and
// 65536, groups 8 and 32) 8 took 39.7 us at 1 x 65536 (random page tables) where 4 took
// 35.5, and 16 took 43.4; 1 and 2 were within 0.2 us or 2.1% of 4 either way; a warp reading
// whole tokens with slot numbers shared by shuffles (38.0-38.9 us), and 4 blocks a
// multiprocessor instead of 8 (36.7-36.8), were slower. docs/PERFORMANCE.md has the runs.
constexpr int kGatherInFlight = 4;

__global__ void __launch_bounds__(kThreads)
    GatherReadKernel(const int32_t* slots, int tokens, const uint4* data, int data_units,
                     const uint4* params, int param_units, uint32_t* checksum) {
  const int units_per_token = data_units + param_units;
  const int first = blockIdx.x * blockDim.x + threadIdx.x;
  const int stride = gridDim.x * blockDim.x;
  const int stride_tokens = stride / units_per_token, stride_units = stride % units_per_token;
  int token = first / units_per_token, unit = first % units_per_token;
  uint32_t sum = 0;
  while (token < tokens) {
    const uint4* from[kGatherInFlight];
#pragma unroll
    for (int k = 0; k < kGatherInFlight; ++k) {
      from[k] = nullptr;
      if (token < tokens) {
        const int64_t slot = __ldg(slots + token);
        from[k] = unit < data_units ? data + slot * data_units + unit
                                    : params + slot * param_units + (unit - data_units);
      }
      token += stride_tokens;
      unit += stride_units;
      if (unit >= units_per_token) {
        unit -= units_per_token;
        ++token;
      }
    }
#pragma unroll
    for (int k = 0; k < kGatherInFlight; ++k) {
      if (from[k] != nullptr) {
        const uint4 v = __ldcs(from[k]);
        sum += v.x + v.y + v.z + v.w;
      }
    }
  }
  // The loads feed `sum` either way, so the compiler cannot drop them when it is not kept.
  if (checksum == nullptr) return;
  __shared__ uint32_t warp_sums[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    uint32_t block_sum = 0;
    for (int w = 0; w < kThreads / 32; ++w) block_sum += warp_sums[w];
    atomicAdd(checksum, block_sum);
  }
}

__global__ void EmptyKernel() {}

// The current device's multiprocessor count, into *sms.
cudaError_t CurrentDeviceMultiprocessors(int* sms) {
  int device = 0;
  const cudaError_t status = cudaGetDevice(&device);
  if (status != cudaSuccess) return status;
  return cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, device);
}

}  // namespace

cudaError_t LaunchEmptyKernel(cudaStream_t stream) {
  EmptyKernel<<<1, 32, 0, stream>>>();
  return cudaGetLastError();
}

cudaError_t LaunchReadStream(const void* a, int64_t a_bytes, const void* b, int64_t b_bytes,
                             uint32_t* sink, cudaStream_t stream) {
  int sms = 0;
  const cudaError_t status = CurrentDeviceMultiprocessors(&sms);
  if (status != cudaSuccess) return status;
  ReadStreamKernel<<<sms * kBlocksPerSm, kThreads, 0, stream>>>(
      static_cast<const uint4*>(a), a_bytes / 16, static_cast<const uint4*>(b), b_bytes / 16, sink);
  return cudaGetLastError();
}

cudaError_t LaunchGatherRead(const int32_t* slots, int64_t tokens, const void* data,
                             int64_t data_row_bytes, const void* params, int64_t param_row_bytes,
                             uint32_t* checksum, cudaStream_t stream) {
  const int64_t units_per_token = (data_row_bytes + param_row_bytes) / 16;
  const bool aligned = reinterpret_cast<uintptr_t>(data) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(params) % 16 == 0 && data_row_bytes % 16 == 0 &&
                       param_row_bytes % 16 == 0;
  // The kernel keeps a token index and a unit within the token, each an int; no product of
  // the two is formed, and rows are addressed in int64 from the slot.
  constexpr int64_t kMaxIndex = int64_t{1} << 31;
  if (!aligned || tokens < 0 || tokens >= kMaxIndex || data_row_bytes < 0 || param_row_bytes < 0 ||
      units_per_token < 1 || units_per_token >= kMaxIndex) {
    return cudaErrorInvalidValue;
  }
  int sms = 0;
  const cudaError_t status = CurrentDeviceMultiprocessors(&sms);
  if (status != cudaSuccess) return status;
  // A thread's token index runs up to kGatherInFlight steps of the grid past the last token.
  const int64_t stride = static_cast<int64_t>(sms) * kBlocksPerSm * kThreads;
  if (tokens + kGatherInFlight * (stride / units_per_token + 1) >= kMaxIndex) {
    return cudaErrorInvalidValue;
  }
  GatherReadKernel<<<sms * kBlocksPerSm, kThreads, 0, stream>>>(
      slots, static_cast<int>(tokens), static_cast<const uint4*>(data),
      static_cast<int>(data_row_bytes / 16), static_cast<const uint4*>(params),
      static_cast<int>(param_row_bytes / 16), checksum);
  return cudaGetLastError();
}

}  // namespace int4kv
