#include <cuda_runtime.h>

#include "common/cuda_check.h"
#include "kv_cache/request_table_scatter.h"

namespace int4kv {
namespace {

__global__ void ScatterKernel(int32_t* table, const uint32_t* index, const int32_t* value,
                              int32_t count) {
  for (int32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x) {
    table[index[i]] = value[i];
  }
}

}  // namespace

absl::Status ScatterInt32(int32_t* table, const uint32_t* index, const int32_t* value,
                          int32_t count, CudaStream stream) {
  if (count <= 0) return absl::OkStatus();
  constexpr int kThreads = 256;
  const int blocks =
      (count + kThreads - 1) / kThreads < 1024 ? (count + kThreads - 1) / kThreads : 1024;
  return LaunchKernel("ScatterKernel launch", ScatterKernel, blocks, kThreads, 0, stream, table,
                      index, value, count);
}

}  // namespace int4kv
