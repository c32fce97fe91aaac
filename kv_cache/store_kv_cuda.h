// CUDA StoreKv / Dequantize: same arithmetic as store_kv.h (bytes identical to the CPU
// versions), launched on a stream, capturable in a CUDA graph.
#ifndef INT4KV_KV_CACHE_STORE_KV_CUDA_H_
#define INT4KV_KV_CACHE_STORE_KV_CUDA_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/cuda_stream.h"
#include "kv_cache/int4_layout.h"
#include "kv_cache/store_kv.h"

namespace int4kv {

// Device-memory view and inputs. slots: device [num_tokens]. The view, layer and rows are
// checked on the host as in StoreKvHost, and slots (and out) must not be null and must be
// aligned to their 4-byte elements when num_tokens > 0 (InvalidArgument, nothing launched);
// which memory the pointers are in is not: a host view, slots or rows fault on the device. A
// slot outside [0, num_slots) is skipped on the device (nothing written for that token): slots
// come from the TokenSlotAllocator, and a device-side check cannot report back without a sync.
// To find such slots without a sync per store, pass `skipped_tokens`: a device int32 (4-byte
// aligned when num_tokens > 0, else InvalidArgument) to which the kernel adds one for each
// token it skipped. The
// caller owns it, clears it, and reads it whenever it next synchronizes (a decode step's
// token read-back, say); many stores may add to one counter.
// Slots other than 0 (where padded rows write) must be distinct within a call: a group of a
// repeated slot may end up with one token's parameters and another's codes (StoreKvHost keeps
// the last token's). The kernel lets the kernel after it launch early: one launched with
// programmatic stream serialization, as the decode backend's are, runs beside the store until
// its `griddepcontrol.wait`, and must not read the cache before that wait.
absl::Status StoreKvCuda(const KvCacheView& view, int32_t layer, const int32_t* slots,
                         int32_t num_tokens, const KvRows& rows, CudaStream stream,
                         QuantRounding rounding = QuantRounding::kNearestEven,
                         int32_t* skipped_tokens = nullptr);

// out: device [num_tokens][2 * kv_heads][head_dim] float32. Out-of-range slots give zeros.
absl::Status DequantizeCuda(const KvCacheView& view, int32_t layer, const int32_t* slots,
                            int32_t num_tokens, float* out, CudaStream stream);

// DequantizeCuda of host `slots` into host memory, for checks over a device cache: the slots
// are uploaded, dequantized on the device and copied back before it returns (ordered on
// `stream`). Returns [slots.size()][2 * kv_heads][head_dim] float32.
absl::StatusOr<std::vector<float>> DequantizeCudaToHost(const KvCacheView& view, int32_t layer,
                                                        absl::Span<const int32_t> slots,
                                                        CudaStream stream);

}  // namespace int4kv

#endif  // INT4KV_KV_CACHE_STORE_KV_CUDA_H_
