// Configuration of one paged INT4 KV cache, with validation and size arithmetic.
#ifndef INT4KV_KV_CACHE_KV_CACHE_CONFIG_H_
#define INT4KV_KV_CACHE_KV_CACHE_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kv_cache/int4_layout.h"

namespace int4kv {

struct KvCacheConfig {
  int32_t num_layers = 1;  // in [1, kMaxLayers]
  int32_t kv_heads = 1;    // in [1, kMaxKvHeads]
  int32_t head_dim = 128;  // even, <= 256, a multiple of group_size
  int32_t group_size = 8;  // 8, 16, 32, 64 or 128
  ParamDtype param_dtype = ParamDtype::kFloat16;
  QuantMode quant_mode = QuantMode::kSymmetric;
  int64_t capacity_slots = 0;  // usable token slots (slot 0 is extra and reserved)
  int32_t max_requests = 1;    // rows of req_to_token
  int32_t max_seq_len = 1;     // columns of req_to_token

  // OK, or InvalidArgument naming the first bad field and its allowed range.
  absl::Status Validate() const;

  // Per-slot, per-layer byte counts, and totals over all layers.
  int64_t DataBytesPerTokenPerLayer() const;
  int64_t ParamBytesPerTokenPerLayer() const;  // scales (+ zero points when asymmetric)
  int64_t BytesPerToken() const;               // all layers, data + params
  int64_t PoolBytes() const;                   // BytesPerToken() * (capacity_slots + 1)

  // Pool geometry for this config (num_slots includes the reserved slot 0).
  KvLayout Layout() const;

  std::string DebugString() const;
};

// Upper limits that keep every index in range.
constexpr int64_t kMaxCapacitySlots = (int64_t{1} << 31) - 2;  // slots are int32
constexpr int32_t kMaxHeadDim = 256;
constexpr int32_t kMaxKvHeads = 1024;
constexpr int32_t kMaxLayers = 4096;
// KvCacheConfig.group_size: one of 8, 16, 32, 64, 128 (kGroupSizeRule says so in errors).
constexpr bool IsSupportedGroupSize(int32_t group_size) {
  return group_size == 8 || group_size == 16 || group_size == 32 || group_size == 64 ||
         group_size == 128;
}
constexpr char kGroupSizeRule[] = "one of 8, 16, 32, 64, 128";
constexpr int64_t kMaxRequestTableEntries = int64_t{1} << 30;  // max_requests * max_seq_len

// The largest capacity (in token slots) whose pools fit in `budget_bytes`. Fails if not even
// one slot fits, or if `config` is invalid apart from its capacity.
absl::StatusOr<int64_t> CapacityForBudget(const KvCacheConfig& config, int64_t budget_bytes);

// Checks a KvCacheView that may not come from KvCache::view() (an embedder's binding filled
// by hand): its layout within KvCacheConfig's ranges (num_slots counts the reserved slot 0),
// its dtype and mode known, its data and scale pools present, and zero points present exactly
// when asymmetric. InvalidArgument names the first bad field.
absl::Status ValidateCacheView(const KvCacheView& view);

absl::string_view ParamDtypeName(ParamDtype dtype);
absl::string_view QuantModeName(QuantMode mode);
absl::StatusOr<ParamDtype> ParseParamDtype(absl::string_view name);  // "fp16" | "bf16"
absl::StatusOr<QuantMode> ParseQuantMode(absl::string_view name);    // "symmetric" | "asymmetric"

}  // namespace int4kv

#endif  // INT4KV_KV_CACHE_KV_CACHE_CONFIG_H_
