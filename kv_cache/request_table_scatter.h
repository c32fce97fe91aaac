// Device scatter used by RequestTable::SyncToDevice: table[index[i]] = value[i].
#ifndef INT4KV_KV_CACHE_REQUEST_TABLE_SCATTER_H_
#define INT4KV_KV_CACHE_REQUEST_TABLE_SCATTER_H_

#include <cstdint>

#include "absl/status/status.h"
#include "common/cuda_stream.h"

namespace int4kv {

// index, value: device [count]; table: device. Ordered on `stream`.
absl::Status ScatterInt32(int32_t* table, const uint32_t* index, const int32_t* value,
                          int32_t count, CudaStream stream);

}  // namespace int4kv

#endif  // INT4KV_KV_CACHE_REQUEST_TABLE_SCATTER_H_
