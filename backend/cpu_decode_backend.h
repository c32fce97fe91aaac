// Decode attention on the CPU over a host-memory INT4 cache: the serving path on machines
// without a GPU (float32 accumulation) and the oracle of every CUDA test (float64).
#ifndef INT4KV_BACKEND_CPU_DECODE_BACKEND_H_
#define INT4KV_BACKEND_CPU_DECODE_BACKEND_H_

#include <memory>

#include "absl/status/statusor.h"
#include "backend/decode_attention_backend.h"

namespace int4kv {

// cache: host pools and host req_to_token. options.io_dtype must be float32. Where a CUDA
// device exists, creation asks CUDA whether each of the binding's pointers is device memory
// (CheckBindingMemory), which starts the process's CUDA context on the current device.
absl::StatusOr<std::unique_ptr<DecodeAttentionBackend>> CreateCpuDecodeBackend(
    const KvCacheBinding& cache, const AttentionShape& shape, const BackendOptions& options);

}  // namespace int4kv

#endif  // INT4KV_BACKEND_CPU_DECODE_BACKEND_H_
