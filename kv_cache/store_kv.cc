#include "kv_cache/store_kv.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "common/half.h"
#include "common/status_macros.h"
#include "kv_cache/kv_cache_config.h"

namespace int4kv {
namespace {

float LoadElement(const void* base, int64_t index, DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return static_cast<const float*>(base)[index];
    case DType::kFloat16:
      return HalfBitsToFloat(static_cast<const uint16_t*>(base)[index]);
    case DType::kBFloat16:
      return Bf16BitsToFloat(static_cast<const uint16_t*>(base)[index]);
  }
  return 0.0f;
}

absl::Status CheckSlots(const KvCacheView& view, absl::Span<const int32_t> slots) {
  for (size_t i = 0; i < slots.size(); ++i) {
    if (slots[i] < 0 || slots[i] >= view.layout.num_slots) {
      return absl::InvalidArgumentError(absl::StrCat(
          "slots[", i, "] = ", slots[i], " is out of range [0, ", view.layout.num_slots, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckLayer(const KvCacheView& view, int32_t layer) {
  if (layer < 0 || layer >= view.layout.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " is out of range [0, ",
                                                   view.layout.num_layers,
                                                   ") (KvCacheView.layout.num_layers)"));
  }
  return absl::OkStatus();
}

absl::Status CheckRows(const KvRows& rows, const KvLayout& layout) {
  if (rows.k == nullptr || rows.v == nullptr) {
    return absl::InvalidArgumentError("KvRows.k and KvRows.v must not be null");
  }
  if (rows.dtype != DType::kFloat32 && rows.dtype != DType::kFloat16 &&
      rows.dtype != DType::kBFloat16) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvRows.dtype = ", static_cast<int>(rows.dtype),
                     " is invalid: must be float32 (0), float16 (1) or bfloat16 (2)"));
  }
  RETURN_IF_ERROR(CheckElementAlignment(rows.k, DTypeSize(rows.dtype), "KvRows.k"));
  RETURN_IF_ERROR(CheckElementAlignment(rows.v, DTypeSize(rows.dtype), "KvRows.v"));
  const int64_t row_elements = int64_t{layout.kv_heads} * layout.head_dim;
  if (rows.token_stride != 0 && rows.token_stride < row_elements) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvRows.token_stride = ", rows.token_stride,
                     " is invalid: must be 0 or >= kv_heads * head_dim = ", row_elements));
  }
  return absl::OkStatus();
}

absl::Status CheckElementAlignment(const void* pointer, int element_bytes, const char* field) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(pointer);
  if (address % element_bytes == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " = 0x", absl::Hex(address),
                                                 " is not aligned to its ", element_bytes,
                                                 "-byte elements"));
}

absl::Status CheckRounding(QuantRounding rounding) {
  if (rounding != QuantRounding::kNearestEven && rounding != QuantRounding::kTruncate) {
    return absl::InvalidArgumentError(
        absl::StrCat("rounding = ", static_cast<int>(rounding),
                     " is invalid: must be QuantRounding::kNearestEven (0) or kTruncate (1)"));
  }
  return absl::OkStatus();
}

absl::Status StoreKvHost(const KvCacheView& view, int32_t layer, absl::Span<const int32_t> slots,
                         const KvRows& rows, QuantRounding rounding) {
  if (absl::Status s = ValidateCacheView(view); !s.ok()) return s;
  if (absl::Status s = CheckLayer(view, layer); !s.ok()) return s;
  if (absl::Status s = CheckRounding(rounding); !s.ok()) return s;
  if (slots.empty()) return absl::OkStatus();
  if (absl::Status s = CheckRows(rows, view.layout); !s.ok()) return s;
  if (absl::Status s = CheckSlots(view, slots); !s.ok()) return s;
  const KvLayout& layout = view.layout;
  const int64_t stride =
      rows.token_stride != 0 ? rows.token_stride : int64_t{layout.kv_heads} * layout.head_dim;
  for (size_t i = 0; i < slots.size(); ++i) {
    for (int32_t row = 0; row < layout.RowsPerSlot(); ++row) {
      const bool is_key = row < layout.kv_heads;
      const int32_t head = is_key ? row : row - layout.kv_heads;
      const void* source = is_key ? rows.k : rows.v;
      const int64_t first = static_cast<int64_t>(i) * stride + int64_t{head} * layout.head_dim;
      QuantizeRow([&](int d) { return LoadElement(source, first + d, rows.dtype); },
                  layout.head_dim, layout.group_size, view.param_dtype, view.quant_mode, rounding,
                  view.Row(layer, slots[i], row), view.RowScales(layer, slots[i], row),
                  view.RowZeros(layer, slots[i], row));
    }
  }
  return absl::OkStatus();
}

absl::Status DequantizeHost(const KvCacheView& view, int32_t layer, absl::Span<const int32_t> slots,
                            float* out) {
  if (absl::Status s = ValidateCacheView(view); !s.ok()) return s;
  if (absl::Status s = CheckLayer(view, layer); !s.ok()) return s;
  if (absl::Status s = CheckSlots(view, slots); !s.ok()) return s;
  if (out == nullptr && !slots.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("out is null with ", slots.size(), " slots to dequantize"));
  }
  const KvLayout& layout = view.layout;
  for (size_t i = 0; i < slots.size(); ++i) {
    for (int32_t row = 0; row < layout.RowsPerSlot(); ++row) {
      const uint8_t* bytes = view.Row(layer, slots[i], row);
      const uint16_t* scales = view.RowScales(layer, slots[i], row);
      const uint16_t* zeros = view.RowZeros(layer, slots[i], row);
      float* dst = out + (static_cast<int64_t>(i) * layout.RowsPerSlot() + row) * layout.head_dim;
      for (int d = 0; d < layout.head_dim; ++d) {
        dst[d] = DequantizeElement(bytes, scales, zeros, d, layout.group_size, view.param_dtype,
                                   view.quant_mode);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace int4kv
