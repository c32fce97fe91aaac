#include "kv_cache/kv_cache_config.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace int4kv {
namespace {

// Where the fields a config shares with a view are named: every one under "KvCacheConfig." in
// a config; in a view, the layout's under "KvCacheView.layout." and the dtype and mode under
// "KvCacheView.".
struct FieldOwners {
  absl::string_view layout;
  absl::string_view format;
};
constexpr absl::string_view kConfigOwner = "KvCacheConfig.";
constexpr FieldOwners kConfigFields = {kConfigOwner, kConfigOwner};
constexpr FieldOwners kViewFields = {"KvCacheView.layout.", "KvCacheView."};

absl::Status OutOfRange(absl::string_view owner, absl::string_view field, int64_t value,
                        absl::string_view allowed) {
  return absl::InvalidArgumentError(
      absl::StrCat(owner, field, " = ", value, " is invalid: must be ", allowed));
}

// The fields that fix the cache's format (all but its sizes).
absl::Status ValidateFormat(const KvCacheConfig& c, const FieldOwners& owners) {
  if (c.num_layers < 1 || c.num_layers > kMaxLayers) {
    return OutOfRange(owners.layout, "num_layers", c.num_layers,
                      absl::StrCat("in [1, ", kMaxLayers, "]"));
  }
  if (c.kv_heads < 1 || c.kv_heads > kMaxKvHeads) {
    return OutOfRange(owners.layout, "kv_heads", c.kv_heads,
                      absl::StrCat("in [1, ", kMaxKvHeads, "]"));
  }
  if (!IsSupportedGroupSize(c.group_size)) {
    return OutOfRange(owners.layout, "group_size", c.group_size, kGroupSizeRule);
  }
  // group_size (checked above) is even, so a multiple of it packs two codes a byte.
  if (c.head_dim < c.group_size || c.head_dim > kMaxHeadDim || c.head_dim % c.group_size != 0) {
    return OutOfRange(owners.layout, "head_dim", c.head_dim,
                      absl::StrCat("a multiple of group_size (", c.group_size, ") in [",
                                   c.group_size, ", ", kMaxHeadDim, "]"));
  }
  if (c.param_dtype != ParamDtype::kFloat16 && c.param_dtype != ParamDtype::kBFloat16) {
    return OutOfRange(owners.format, "param_dtype", static_cast<int>(c.param_dtype),
                      "fp16 (0) or bf16 (1)");
  }
  if (c.quant_mode != QuantMode::kSymmetric && c.quant_mode != QuantMode::kAsymmetric) {
    return OutOfRange(owners.format, "quant_mode", static_cast<int>(c.quant_mode),
                      "symmetric (0) or asymmetric (1)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status KvCacheConfig::Validate() const {
  RETURN_IF_ERROR(ValidateFormat(*this, kConfigFields));
  if (capacity_slots < 1 || capacity_slots > kMaxCapacitySlots) {
    return OutOfRange(kConfigOwner, "capacity_slots", capacity_slots,
                      absl::StrCat("in [1, ", kMaxCapacitySlots, "]"));
  }
  if (max_requests < 1) return OutOfRange(kConfigOwner, "max_requests", max_requests, ">= 1");
  if (max_seq_len < 1) return OutOfRange(kConfigOwner, "max_seq_len", max_seq_len, ">= 1");
  if (int64_t{max_requests} * max_seq_len > kMaxRequestTableEntries) {
    return OutOfRange(
        kConfigOwner, "max_seq_len", max_seq_len,
        absl::StrCat("such that max_requests * max_seq_len <= ", kMaxRequestTableEntries,
                     " (max_requests = ", max_requests, ")"));
  }
  return absl::OkStatus();
}

// The layout owns the per-slot byte counts; a token takes one slot.
int64_t KvCacheConfig::DataBytesPerTokenPerLayer() const { return Layout().DataBytesPerSlot(); }

int64_t KvCacheConfig::ParamBytesPerTokenPerLayer() const {
  return Layout().ParamBytesPerSlot(quant_mode);
}

int64_t KvCacheConfig::BytesPerToken() const {
  return num_layers * (DataBytesPerTokenPerLayer() + ParamBytesPerTokenPerLayer());
}

int64_t KvCacheConfig::PoolBytes() const { return BytesPerToken() * (capacity_slots + 1); }

KvLayout KvCacheConfig::Layout() const {
  KvLayout layout;
  layout.num_layers = num_layers;
  layout.kv_heads = kv_heads;
  layout.head_dim = head_dim;
  layout.group_size = group_size;
  layout.num_slots = capacity_slots + 1;
  return layout;
}

std::string KvCacheConfig::DebugString() const {
  // BytesPerToken divides by group_size and can overflow: only a valid config has one.
  const std::string bytes_per_token =
      Validate().ok() ? absl::StrCat(BytesPerToken()) : std::string("invalid");
  return absl::StrFormat(
      "layers=%d kv_heads=%d head_dim=%d group_size=%d params=%s mode=%s capacity_slots=%d "
      "max_requests=%d max_seq_len=%d bytes_per_token=%s",
      num_layers, kv_heads, head_dim, group_size, ParamDtypeName(param_dtype),
      QuantModeName(quant_mode), capacity_slots, max_requests, max_seq_len, bytes_per_token);
}

absl::StatusOr<int64_t> CapacityForBudget(const KvCacheConfig& config, int64_t budget_bytes) {
  KvCacheConfig probe = config;
  probe.capacity_slots = 1;
  if (absl::Status status = probe.Validate(); !status.ok()) return status;
  const int64_t per_token = probe.BytesPerToken();
  const int64_t slots = budget_bytes / per_token - 1;  // one row is the reserved slot 0
  if (slots < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache budget of ", budget_bytes, " bytes holds no token slot: ", per_token,
        " bytes per token, and slot 0 is reserved (need at least ", 2 * per_token, ")"));
  }
  return std::min(slots, kMaxCapacitySlots);
}

absl::Status ValidateCacheView(const KvCacheView& view) {
  const int64_t num_slots = view.layout.num_slots;
  if (num_slots < 2 || num_slots - 1 > kMaxCapacitySlots) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KvCacheView.layout.num_slots = ", num_slots, " is invalid: must be in [2, ",
        kMaxCapacitySlots + 1, "] (the reserved slot 0 and at least one slot for a token)"));
  }
  KvCacheConfig format;
  format.num_layers = view.layout.num_layers;
  format.kv_heads = view.layout.kv_heads;
  format.head_dim = view.layout.head_dim;
  format.group_size = view.layout.group_size;
  format.param_dtype = view.param_dtype;
  format.quant_mode = view.quant_mode;
  RETURN_IF_ERROR(ValidateFormat(format, kViewFields));
  if (view.data == nullptr || view.scales == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvCacheView.", view.data == nullptr ? "data" : "scales",
                     " is null: the view needs its code and scale pools"));
  }
  const bool asymmetric = view.quant_mode == QuantMode::kAsymmetric;
  if (asymmetric != (view.zeros != nullptr)) {
    return absl::InvalidArgumentError(
        asymmetric ? "KvCacheView.zeros is null: an asymmetric cache needs its zero-point pool"
                   : "KvCacheView.zeros is set: a symmetric cache has no zero-point pool");
  }
  return absl::OkStatus();
}

absl::string_view ParamDtypeName(ParamDtype dtype) {
  switch (dtype) {
    case ParamDtype::kFloat16:
      return "fp16";
    case ParamDtype::kBFloat16:
      return "bf16";
  }
  return "invalid";  // a value cast from outside the enum
}

absl::string_view QuantModeName(QuantMode mode) {
  switch (mode) {
    case QuantMode::kSymmetric:
      return "symmetric";
    case QuantMode::kAsymmetric:
      return "asymmetric";
  }
  return "invalid";
}

absl::StatusOr<ParamDtype> ParseParamDtype(absl::string_view name) {
  if (name == "fp16" || name == "float16") return ParamDtype::kFloat16;
  if (name == "bf16" || name == "bfloat16") return ParamDtype::kBFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("parameter dtype '", name, "' is invalid: must be fp16 or bf16"));
}

absl::StatusOr<QuantMode> ParseQuantMode(absl::string_view name) {
  if (name == "symmetric") return QuantMode::kSymmetric;
  if (name == "asymmetric") return QuantMode::kAsymmetric;
  return absl::InvalidArgumentError(
      absl::StrCat("quant mode '", name, "' is invalid: must be symmetric or asymmetric"));
}

}  // namespace int4kv
