// Benchmark support: a kernel that only reads device memory, as fast as the device streams
// it, so that decode_bench can time a plain read of the bytes an attention step reads; and an
// empty kernel, for runs that must not follow one another as programmatic dependents.
#ifndef INT4KV_BACKEND_READ_STREAM_H_
#define INT4KV_BACKEND_READ_STREAM_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace int4kv {

// Enqueues on `stream` one kernel that reads every byte of [a, a + a_bytes) and
// [b, b + b_bytes) once (device memory, owned by the caller; both 16-byte aligned, sizes
// multiples of 16). `sink`: 4 bytes of device memory that the kernel may overwrite.
cudaError_t LaunchReadStream(const void* a, int64_t a_bytes, const void* b, int64_t b_bytes,
                             uint32_t* sink, cudaStream_t stream);

// Enqueues on `stream` a kernel of one block that does nothing, launched without
// programmatic dependent launch: whatever follows it starts only once it has finished.
cudaError_t LaunchEmptyKernel(cudaStream_t stream);

}  // namespace int4kv

#endif  // INT4KV_BACKEND_READ_STREAM_H_
