// The INT4 KV cache layout. This is the one place it is written down; every kernel and every
// host routine computes offsets through KvLayout / KvCacheView below.
//
// Per layer, slot-major, one token per page. Slot 0 is reserved: padded batch rows write
// there and it is never handed out by the allocator.
//
//   data   uint8  [layers][slots][2 * kv_heads][head_dim / 2]   K heads first, then V heads
//          byte j of a head row = code(2j) (low nibble) | code(2j + 1) << 4 (high nibble)
//   scale  fp16|bf16 [layers][slots][2 * kv_heads][head_dim / group_size]
//   zero   fp16|bf16 [layers][slots][2 * kv_heads][head_dim / group_size]   asymmetric only
//
// Symmetric (default): the layout of LightLLM's Triton INT4 KV quantizer and flash-decoding
// kernel (destindex_copy_int4kv: codes q + 7 in unsigned nibbles, low nibble first, an fp16
// scale per group), which truncates where this rounds. Its older PPL-kernel path wrote
// two's-complement nibbles instead, a different byte encoding. LightLLM reserves its pool's
// last slot, not slot 0, so its tables may name slot 0: bind them by hand (KvCacheBinding),
// not through RequestTable, which refuses slot 0.
//
//   s = absmax(group) / 7, rounded to the parameter dtype (saturating at its largest finite)
//   code = clamp(rint(x / s), -7, 7) + 7          codes 0..14
//   x'   = (code - 7) * s                          all-zero group -> s = 0, x' = 0
// Asymmetric:
//   z = min rounded toward -inf to the parameter dtype (saturating at its most negative finite)
//   s = (max - z) / 15 in float (at least the smallest float denormal), rounded toward +inf to
//       the parameter dtype (saturating at its largest finite), and one step more if x' of
//       code 15 is still below max; s = 0 if max <= z (a constant group, or an fp16 group
//       wholly below -65504, where z saturates above it and every x' reads -65504)
//   code = clamp(rint((x - z) / s), 0, 15)         codes 0..15
//   x'   = code * s + z                             (one fused multiply-add)
//   So z <= min and x'(15) >= max unless saturated, and every x is within s / 2 of the grid
//   (up to float rounding: where |x| is far below |z|, x - z may round onto a midpoint).
// rint rounds half to even. Quantization divides by the *stored* (rounded) s and z, so the
// dequantized value is the one nearest x on the stored grid, up to that float rounding. A
// group whose s is 0 (symmetric: s rounds to 0; asymmetric: a constant group that z stores
// exactly) stores codes for zero (symmetric) or 0 (asymmetric) and dequantizes to 0 (or z).
// Non-finite and extreme input: NaN is quantized as the value 0 (in an asymmetric group it
// widens the range to include 0 and dequantizes to the grid point nearest 0, which need not be
// 0 itself); +-Inf and finite values beyond +-1e37 are clamped to +-1e37 first, so no NaN or
// Inf is ever written, nor dequantized here (DequantizeHost and DequantizeCuda give x' in
// float). The cuda attention kernels dequantize in fp16 arithmetic (each x' rounded to fp16),
// so there values past 65504, which bf16 parameters can hold, become inf (BackendOptions).
#ifndef INT4KV_KV_CACHE_INT4_LAYOUT_H_
#define INT4KV_KV_CACHE_INT4_LAYOUT_H_

#include <cstdint>

#include "common/half.h"

namespace int4kv {

enum class ParamDtype : int32_t { kFloat16 = 0, kBFloat16 = 1 };
enum class QuantMode : int32_t { kSymmetric = 0, kAsymmetric = 1 };

// Parameter pools a cache keeps: scales, and zero points when asymmetric.
INT4KV_HOST_DEVICE int32_t ParamPools(QuantMode mode) {
  return mode == QuantMode::kAsymmetric ? 2 : 1;
}

constexpr int kSymmetricZeroCode = 7;
constexpr int kSymmetricMaxCode = 7;  // |code - 7| <= 7
constexpr int kAsymmetricMaxCode = 15;
constexpr int32_t kPaddingSlot = 0;

// Sizes of one cache's pools; plain data, valid on host and device.
struct KvLayout {
  int32_t num_layers = 0;
  int32_t kv_heads = 0;
  int32_t head_dim = 0;
  int32_t group_size = 0;
  int64_t num_slots = 0;  // rows per layer, including the reserved slot 0

  INT4KV_HOST_DEVICE int32_t RowBytes() const { return head_dim / 2; }
  INT4KV_HOST_DEVICE int32_t GroupsPerRow() const { return head_dim / group_size; }
  INT4KV_HOST_DEVICE int32_t RowsPerSlot() const { return 2 * kv_heads; }
  // Row index within a slot: K head h is row h, V head h is row kv_heads + h.
  INT4KV_HOST_DEVICE int32_t KeyRow(int32_t head) const { return head; }
  INT4KV_HOST_DEVICE int32_t ValueRow(int32_t head) const { return kv_heads + head; }

  INT4KV_HOST_DEVICE int64_t DataBytesPerSlot() const {
    return static_cast<int64_t>(RowsPerSlot()) * RowBytes();
  }
  INT4KV_HOST_DEVICE int64_t ParamsPerSlot() const {
    return static_cast<int64_t>(RowsPerSlot()) * GroupsPerRow();
  }
  // Parameter bytes one slot holds in one layer: scales, and zero points when asymmetric.
  INT4KV_HOST_DEVICE int64_t ParamBytesPerSlot(QuantMode mode) const {
    return ParamPools(mode) * ParamsPerSlot() * static_cast<int64_t>(sizeof(uint16_t));
  }
  // Offset in bytes of row `row` of `slot` in `layer`, from the start of the data pool.
  INT4KV_HOST_DEVICE int64_t DataOffset(int32_t layer, int64_t slot, int32_t row) const {
    return ((static_cast<int64_t>(layer) * num_slots + slot) * RowsPerSlot() + row) * RowBytes();
  }
  // Offset in elements of the first parameter of a row, from the start of a parameter pool.
  INT4KV_HOST_DEVICE int64_t ParamOffset(int32_t layer, int64_t slot, int32_t row) const {
    return ((static_cast<int64_t>(layer) * num_slots + slot) * RowsPerSlot() + row) *
           GroupsPerRow();
  }
  INT4KV_HOST_DEVICE int64_t DataPoolBytes() const {
    return static_cast<int64_t>(num_layers) * num_slots * DataBytesPerSlot();
  }
  INT4KV_HOST_DEVICE int64_t ParamPoolElements() const {
    return static_cast<int64_t>(num_layers) * num_slots * ParamsPerSlot();
  }
};

// A non-owning view of one cache's pools (host or device memory, as the owner says).
struct KvCacheView {
  KvLayout layout;
  ParamDtype param_dtype = ParamDtype::kFloat16;
  QuantMode quant_mode = QuantMode::kSymmetric;
  uint8_t* data = nullptr;     // [layers][slots][2 * kv_heads][head_dim / 2]
  uint16_t* scales = nullptr;  // [layers][slots][2 * kv_heads][head_dim / group_size]
  uint16_t* zeros = nullptr;   // same shape as scales; nullptr in symmetric mode

  INT4KV_HOST_DEVICE uint8_t* Row(int32_t layer, int64_t slot, int32_t row) const {
    return data + layout.DataOffset(layer, slot, row);
  }
  INT4KV_HOST_DEVICE uint16_t* RowScales(int32_t layer, int64_t slot, int32_t row) const {
    return scales + layout.ParamOffset(layer, slot, row);
  }
  INT4KV_HOST_DEVICE uint16_t* RowZeros(int32_t layer, int64_t slot, int32_t row) const {
    return zeros == nullptr ? nullptr : zeros + layout.ParamOffset(layer, slot, row);
  }
  // Bytes one slot holds in one layer: codes, scales, and zero points when asymmetric.
  INT4KV_HOST_DEVICE int64_t BytesPerSlotPerLayer() const {
    return layout.DataBytesPerSlot() + layout.ParamBytesPerSlot(quant_mode);
  }
};

INT4KV_HOST_DEVICE float ParamToFloat(uint16_t bits, ParamDtype dtype) {
  return dtype == ParamDtype::kFloat16 ? HalfBitsToFloat(bits) : Bf16BitsToFloat(bits);
}

INT4KV_HOST_DEVICE uint16_t FloatToParam(float value, ParamDtype dtype) {
  return dtype == ParamDtype::kFloat16 ? FloatToHalfBits(value) : FloatToBf16Bits(value);
}

INT4KV_HOST_DEVICE uint8_t PackCodes(int low, int high) {
  return static_cast<uint8_t>((low & 0xf) | ((high & 0xf) << 4));
}
INT4KV_HOST_DEVICE int LowCode(uint8_t byte) { return byte & 0xf; }
INT4KV_HOST_DEVICE int HighCode(uint8_t byte) { return byte >> 4; }

}  // namespace int4kv

#endif  // INT4KV_KV_CACHE_INT4_LAYOUT_H_
