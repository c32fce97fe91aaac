// Writing K/V into the cache (quantize on write) and reading it back (dequantize), on the
// CPU. The CUDA versions are in store_kv_cuda.h and write identical bytes.
#ifndef INT4KV_KV_CACHE_STORE_KV_H_
#define INT4KV_KV_CACHE_STORE_KV_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "kv_cache/int4_layout.h"
#include "kv_cache/quantize.h"

namespace int4kv {

// New K and V rows for a set of tokens, in host or device memory as the callee requires.
//   k, v: [num_tokens][kv_heads][head_dim] elements of `dtype`, token i at
//         k + i * token_stride (token_stride in elements; 0 means kv_heads * head_dim).
struct KvRows {
  const void* k = nullptr;
  const void* v = nullptr;
  DType dtype = DType::kFloat32;
  int64_t token_stride = 0;
};

// Quantizes token i's K/V rows of `layer` into slot slots[i] of a host-memory view. The view
// must pass ValidateCacheView (kv_cache_config.h) and every slot must be in [0, num_slots)
// (slot 0 is where padded rows write); on a bad view, layer, rows or slot nothing is written
// and the InvalidArgument names it. A slot listed twice holds the later token's values (the
// CUDA store does not promise that: keep slots other than 0 distinct). Which memory the
// pointers are in is not checked: a device-memory view or rows fault here.
absl::Status StoreKvHost(const KvCacheView& view, int32_t layer, absl::Span<const int32_t> slots,
                         const KvRows& rows, QuantRounding rounding = QuantRounding::kNearestEven);

// Dequantizes the rows of `layer` for each slot into
//   out: [slots.size()][2 * kv_heads][head_dim] float32 (K heads, then V heads).
// The view, layer and slots are checked as in StoreKvHost; out must not be null when there
// are slots.
absl::Status DequantizeHost(const KvCacheView& view, int32_t layer, absl::Span<const int32_t> slots,
                            float* out);

// Checks shared by the CPU and CUDA entry points, after ValidateCacheView(view).
// CheckRows: k and v set and aligned to their dtype's size, dtype one of DType's values,
// token_stride 0 or a whole row.
// CheckRounding: one of QuantRounding's values (the kernels would read any other as truncation).
// CheckElementAlignment: `pointer` a multiple of `element_bytes` (InvalidArgument naming
// `field` otherwise: a misaligned access faults on the device, which ends the CUDA context).
absl::Status CheckLayer(const KvCacheView& view, int32_t layer);
absl::Status CheckRows(const KvRows& rows, const KvLayout& layout);
absl::Status CheckRounding(QuantRounding rounding);
absl::Status CheckElementAlignment(const void* pointer, int element_bytes, const char* field);

}  // namespace int4kv

#endif  // INT4KV_KV_CACHE_STORE_KV_H_
