// Test support: rewrites a device page table while the kernel launched after it on the same
// stream is already running, so that kernel's reads before `griddepcontrol.wait` see the old
// entries and its reads after the wait see the new ones.
#ifndef INT4KV_BACKEND_LATE_TABLE_WRITER_H_
#define INT4KV_BACKEND_LATE_TABLE_WRITER_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace int4kv {

// Enqueues on `stream` one block that first lets the next kernel launch (programmatic
// dependent launch), then waits about `delay_ns` and copies `count` entries from `from` to
// `to` (both device memory, owned by the caller).
cudaError_t LaunchLateTableWrite(int32_t* to, const int32_t* from, int64_t count,
                                 int64_t delay_ns, cudaStream_t stream);

}  // namespace int4kv

#endif  // INT4KV_BACKEND_LATE_TABLE_WRITER_H_
