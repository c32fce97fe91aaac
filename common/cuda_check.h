// Turns CUDA runtime errors into absl::Status. Every CUDA call in the project goes through
// CUDA_RETURN_IF_ERROR (host APIs) or CudaStatus (where a Status is built by hand).
#ifndef INT4KV_COMMON_CUDA_CHECK_H_
#define INT4KV_COMMON_CUDA_CHECK_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace int4kv {

// Internal if `error` is not cudaSuccess; the message names the call and the CUDA error. An
// error reported this way is also taken off the thread's last-error slot (where a failed call
// leaves a non-sticky error), so that a later launch, checked with cudaGetLastError, does not
// report it a second time as its own.
inline absl::Status CudaStatus(cudaError_t error, const char* call) {
  if (error == cudaSuccess) return absl::OkStatus();
  cudaGetLastError();
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

#ifdef __CUDACC__
namespace cuda_check_internal {

template <typename... Params, typename... Args>
absl::Status Launch(const char* what, bool programmatic_dependent, void (*kernel)(Params...),
                    dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                    Args&&... args) {
  cudaLaunchAttribute attribute;
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  config.attrs = programmatic_dependent ? &attribute : nullptr;
  config.numAttrs = programmatic_dependent ? 1 : 0;
  return CudaStatus(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...), what);
}

}  // namespace cuda_check_internal

// Launches `kernel` on `stream` and returns the status of this launch alone; `what` names it
// in the error. (A <<<>>> launch checked with cudaGetLastError also reports an earlier,
// unrelated error of the thread, such as an embedder's unchecked one.)
template <typename... Params, typename... Args>
absl::Status LaunchKernel(const char* what, void (*kernel)(Params...), dim3 grid, dim3 block,
                          size_t shared_bytes, cudaStream_t stream, Args&&... args) {
  return cuda_check_internal::Launch(what, false, kernel, grid, block, shared_bytes, stream,
                                     std::forward<Args>(args)...);
}

// LaunchKernel as a programmatic dependent of the work before it on `stream`: its blocks may
// start before that work finishes, and wait for it with griddepcontrol.wait.
template <typename... Params, typename... Args>
absl::Status LaunchDependentKernel(const char* what, void (*kernel)(Params...), dim3 grid,
                                   dim3 block, size_t shared_bytes, cudaStream_t stream,
                                   Args&&... args) {
  return cuda_check_internal::Launch(what, true, kernel, grid, block, shared_bytes, stream,
                                     std::forward<Args>(args)...);
}
#endif

// Number of CUDA devices usable by this process; 0 when there is no GPU or no driver.
inline int CudaDeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // Clear the sticky "no device" error.
    return 0;
  }
  return count;
}

// FailedPrecondition "<what> on a stream that is being captured: <why>" while `stream` is
// being captured into a graph, for calls that wait on the host (illegal in a capture); the
// query's own error otherwise, else OK.
inline absl::Status RefuseCapture(cudaStream_t stream, const char* what, const char* why) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (const absl::Status status =
          CudaStatus(cudaStreamIsCapturing(stream, &capture), "cudaStreamIsCapturing");
      !status.ok()) {
    return status;
  }
  if (capture == cudaStreamCaptureStatusNone) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat(what, " on a stream that is being captured: ", why));
}

}  // namespace int4kv

#define CUDA_RETURN_IF_ERROR(call)                                                  \
  do {                                                                              \
    const ::absl::Status int4kv_cuda_status_ = ::int4kv::CudaStatus((call), #call); \
    if (!int4kv_cuda_status_.ok()) return int4kv_cuda_status_;                      \
  } while (0)

#endif  // INT4KV_COMMON_CUDA_CHECK_H_
