// Small owners of CUDA resources: device and pinned host buffers, a stream and an event. Each
// is created once (Allocate / Create return a Status naming the call and the size on failure)
// and released in its destructor; none of them allocates after that. The CUDA engine path and
// the embedding example use them.
//
// Thread ownership: plain owners, no locking; one thread at a time uses each.
#ifndef INT4KV_COMMON_DEVICE_MEMORY_H_
#define INT4KV_COMMON_DEVICE_MEMORY_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

#include "absl/status/status.h"
#include "common/cuda_check.h"
#include "common/cuda_stream.h"
#include "common/status_macros.h"

namespace int4kv {

enum class BufferSpace { kDevice, kPinnedHost };

// Owns `bytes` of device memory (cudaMalloc) or of page-locked host memory (cudaMallocHost,
// the source of asynchronous host-to-device copies). Movable, not copyable.
template <BufferSpace kSpace>
class CudaBuffer {
 public:
  CudaBuffer() = default;
  ~CudaBuffer() { Free(); }
  CudaBuffer(CudaBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  CudaBuffer& operator=(CudaBuffer&& other) noexcept {
    if (this != &other) {
      Free();
      data_ = std::exchange(other.data_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  CudaBuffer(const CudaBuffer&) = delete;
  CudaBuffer& operator=(const CudaBuffer&) = delete;

  // Replaces the buffer with `bytes` of fresh memory (contents undefined). `what` names the
  // buffer in the error (ResourceExhausted when memory runs out).
  absl::Status Allocate(size_t bytes, const char* what) {
    Free();
    if (bytes == 0) return absl::OkStatus();
    RETURN_IF_ERROR(CudaAllocate(&data_, bytes, kSpace == BufferSpace::kPinnedHost, what));
    bytes_ = bytes;
    return absl::OkStatus();
  }

  void* get() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void Free() {
    if (data_ != nullptr) kSpace == BufferSpace::kDevice ? cudaFree(data_) : cudaFreeHost(data_);
    data_ = nullptr;
    bytes_ = 0;
  }

  void* data_ = nullptr;
  size_t bytes_ = 0;
};

using DeviceBuffer = CudaBuffer<BufferSpace::kDevice>;
using PinnedBuffer = CudaBuffer<BufferSpace::kPinnedHost>;

// Owns a non-blocking stream (no implicit ordering with the legacy default stream).
class OwnedStream {
 public:
  OwnedStream() = default;
  ~OwnedStream() {
    if (stream_ != nullptr) {
      cudaStreamSynchronize(stream_);
      cudaStreamDestroy(stream_);
    }
  }
  OwnedStream(const OwnedStream&) = delete;
  OwnedStream& operator=(const OwnedStream&) = delete;

  absl::Status Create() {
    CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    return absl::OkStatus();
  }
  CudaStream get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

// Owns an event; `timing` false creates a cheaper event for ordering only.
class OwnedEvent {
 public:
  OwnedEvent() = default;
  ~OwnedEvent() {
    if (event_ != nullptr) cudaEventDestroy(event_);
  }
  OwnedEvent(OwnedEvent&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}
  OwnedEvent& operator=(OwnedEvent&& other) noexcept {
    if (this != &other) {
      if (event_ != nullptr) cudaEventDestroy(event_);
      event_ = std::exchange(other.event_, nullptr);
    }
    return *this;
  }
  OwnedEvent(const OwnedEvent&) = delete;
  OwnedEvent& operator=(const OwnedEvent&) = delete;

  absl::Status Create(bool timing) {
    CUDA_RETURN_IF_ERROR(
        cudaEventCreateWithFlags(&event_, timing ? cudaEventDefault : cudaEventDisableTiming));
    return absl::OkStatus();
  }
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

}  // namespace int4kv

#endif  // INT4KV_COMMON_DEVICE_MEMORY_H_
