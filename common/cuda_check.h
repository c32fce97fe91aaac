// Turns CUDA runtime errors into absl::Status. Every CUDA call in the project goes through
// CUDA_RETURN_IF_ERROR (host APIs) or CudaStatus (where a Status is built by hand).
#ifndef INT4KV_COMMON_CUDA_CHECK_H_
#define INT4KV_COMMON_CUDA_CHECK_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace int4kv {

// Internal if `error` is not cudaSuccess; the message names the call and the CUDA error.
inline absl::Status CudaStatus(cudaError_t error, const char* call) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(call, " failed: ", cudaGetErrorName(error), " (",
                                          cudaGetErrorString(error), ")"));
}

// cudaMalloc, or cudaMallocHost when `pinned_host`, of `bytes` into *out; `what` names the
// buffer ("the KV pools", ...). On failure *out is null, the (non-sticky) CUDA error is
// cleared for the caller's next call, and the status says "cannot allocate N bytes of device
// memory for <what>: <CUDA error>": ResourceExhausted when memory ran out (and for any pinned
// host failure, which the system refuses for reasons of its own), else Internal.
inline absl::Status CudaAllocate(void** out, size_t bytes, bool pinned_host,
                                 absl::string_view what) {
  const cudaError_t error = pinned_host ? cudaMallocHost(out, bytes) : cudaMalloc(out, bytes);
  if (error == cudaSuccess) return absl::OkStatus();
  *out = nullptr;
  cudaGetLastError();
  const std::string message = absl::StrCat("cannot allocate ", bytes, " bytes of ",
                                           pinned_host ? "pinned host memory" : "device memory",
                                           " for ", what, ": ", cudaGetErrorString(error));
  return error == cudaErrorMemoryAllocation || pinned_host ? absl::ResourceExhaustedError(message)
                                                           : absl::InternalError(message);
}

// Number of CUDA devices usable by this process; 0 when there is no GPU or no driver.
inline int CudaDeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // Clear the sticky "no device" error.
    return 0;
  }
  return count;
}

}  // namespace int4kv

#define CUDA_RETURN_IF_ERROR(call)                                                  \
  do {                                                                              \
    const ::absl::Status int4kv_cuda_status_ = ::int4kv::CudaStatus((call), #call); \
    if (!int4kv_cuda_status_.ok()) return int4kv_cuda_status_;                      \
  } while (0)

#endif  // INT4KV_COMMON_CUDA_CHECK_H_
