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

__global__ void EmptyKernel() {}

}  // namespace

cudaError_t LaunchEmptyKernel(cudaStream_t stream) {
  EmptyKernel<<<1, 32, 0, stream>>>();
  return cudaGetLastError();
}

cudaError_t LaunchReadStream(const void* a, int64_t a_bytes, const void* b, int64_t b_bytes,
                             uint32_t* sink, cudaStream_t stream) {
  int device = 0, sms = 0;
  cudaError_t status = cudaGetDevice(&device);
  if (status == cudaSuccess) {
    status = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  }
  if (status != cudaSuccess) return status;
  ReadStreamKernel<<<sms * kBlocksPerSm, kThreads, 0, stream>>>(
      static_cast<const uint4*>(a), a_bytes / 16, static_cast<const uint4*>(b), b_bytes / 16, sink);
  return cudaGetLastError();
}

}  // namespace int4kv
