// Benchmark support: kernels that only read device memory, as fast as the device streams it,
// so that decode_bench can time a plain read of the bytes an attention step reads, in address
// order or gathered through the step's page table; and an empty kernel, for runs that must not
// follow one another as programmatic dependents.
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

// Enqueues on `stream` one kernel that reads, for each of the `tokens` slot numbers in `slots`
// (device memory, in the step's token order: row by row, each row's tokens in order), that
// slot's data row [data + slot * data_row_bytes, + data_row_bytes) and parameter row
// [params + slot * param_row_bytes, + param_row_bytes) once, and the slot numbers themselves:
// the bytes an attention step reads from the cache, in the order its page table gives them.
// Every slot number must name a row of both pools (nothing checks it). Bases 16-byte aligned,
// row sizes multiples of 16, not both 0; `tokens` >= 0 and under 2^31 less a few passes of the
// grid (the bytes read may pass 2^31 units of 16): else cudaErrorInvalidValue. With a
// non-null `checksum` (device memory) the kernel adds to it the wrapping sum of every 32-bit
// word of the rows it read, so a test can tell that each row was read exactly once; with null
// it only reads (as decode_bench times it).
cudaError_t LaunchGatherRead(const int32_t* slots, int64_t tokens, const void* data,
                             int64_t data_row_bytes, const void* params, int64_t param_row_bytes,
                             uint32_t* checksum, cudaStream_t stream);

// Enqueues on `stream` a kernel of one block that does nothing, launched without
// programmatic dependent launch: whatever follows it starts only once it has finished.
cudaError_t LaunchEmptyKernel(cudaStream_t stream);

}  // namespace int4kv

#endif  // INT4KV_BACKEND_READ_STREAM_H_
