// Per-group INT4 quantization arithmetic, shared by the CPU and CUDA quantizers so both write
// identical bytes. The formulas are the ones written out in int4_layout.h.
#ifndef INT4KV_KV_CACHE_QUANTIZE_H_
#define INT4KV_KV_CACHE_QUANTIZE_H_

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "common/half.h"
#include "kv_cache/int4_layout.h"

namespace int4kv {

// How a scaled value becomes a code. kTruncate is LightLLM's rule (round toward zero); it is
// kept for accuracy comparisons and for writing LightLLM-style caches in tests.
enum class QuantRounding : int32_t { kNearestEven = 0, kTruncate = 1 };

constexpr float kMaxFloat16 = 65504.0f;
constexpr float kMaxBFloat16 = 3.38953139e38f;  // 0x7f7f: larger floats round to infinity

// Inputs are clamped to +-kMaxQuantInput so that every dequantized value (up to 15 steps
// of a rounded-up scale plus a zero point) stays finite in float.
constexpr float kMaxQuantInput = 1e37f;

// NaN -> 0; +-Inf and finite values beyond +-kMaxQuantInput -> +-kMaxQuantInput.
INT4KV_HOST_DEVICE float SanitizeForQuant(float x) {
  if ((FloatBits(x) & 0x7fffffffu) > 0x7f800000u) return 0.0f;
  return fminf(fmaxf(x, -kMaxQuantInput), kMaxQuantInput);
}

// The pool dtype's largest finite value.
INT4KV_HOST_DEVICE float ParamLimit(ParamDtype dtype) {
  return dtype == ParamDtype::kFloat16 ? kMaxFloat16 : kMaxBFloat16;
}

// `value` clamped to the pool dtype's finite range.
INT4KV_HOST_DEVICE float ClampToParamRange(float value, ParamDtype dtype) {
  return fminf(fmaxf(value, -ParamLimit(dtype)), ParamLimit(dtype));
}

// Rounds a parameter to the pool dtype, saturating at its largest finite value.
INT4KV_HOST_DEVICE uint16_t ParamFromFloat(float value, ParamDtype dtype) {
  return FloatToParam(ClampToParamRange(value, dtype), dtype);
}

// The fp16 / bf16 value next to `bits` toward +infinity (up) or -infinity, for a finite
// `bits` that is not the largest finite value in that direction. Both formats are sign and
// magnitude, so the neighbour is one magnitude step away.
INT4KV_HOST_DEVICE uint16_t NextParam(uint16_t bits, bool up) {
  if ((bits & 0x7fffu) == 0) return static_cast<uint16_t>(up ? 0x0001u : 0x8001u);  // +-0
  const bool negative = (bits & 0x8000u) != 0;
  return static_cast<uint16_t>(negative == up ? bits - 1u : bits + 1u);
}

// Rounds a parameter to the pool dtype toward +infinity (up) or -infinity, saturating at the
// largest finite value of that sign, so the result is never infinite.
INT4KV_HOST_DEVICE uint16_t ParamFromFloatDirected(float value, ParamDtype dtype, bool up) {
  const float clamped = ClampToParamRange(value, dtype);
  const uint16_t nearest = FloatToParam(clamped, dtype);
  const float stored = ParamToFloat(nearest, dtype);
  // Round to nearest lands on a neighbour of `clamped`; step to the other one if it is on
  // the wrong side. That neighbour lies between `clamped` and +-limit, so it is finite.
  if (up ? stored < clamped : stored > clamped) return NextParam(nearest, up);
  return nearest;
}

INT4KV_HOST_DEVICE float RoundScaled(float scaled, QuantRounding rounding) {
  return rounding == QuantRounding::kNearestEven ? rintf(scaled) : truncf(scaled);
}

// Symmetric: scale for a group whose largest |x| is `absmax` (already sanitized).
INT4KV_HOST_DEVICE uint16_t SymmetricScale(float absmax, ParamDtype dtype) {
  return ParamFromFloat(absmax / static_cast<float>(kSymmetricMaxCode), dtype);
}

// Code in 0..14 for a sanitized x, given the stored scale converted back to float.
INT4KV_HOST_DEVICE int SymmetricCode(float x, float scale, QuantRounding rounding) {
  if (scale == 0.0f) return kSymmetricZeroCode;
  const float q = RoundScaled(x / scale, rounding);
  const float clamped = fminf(fmaxf(q, -static_cast<float>(kSymmetricMaxCode)),
                              static_cast<float>(kSymmetricMaxCode));
  return static_cast<int>(clamped) + kSymmetricZeroCode;
}

INT4KV_HOST_DEVICE float DequantizeSymmetric(int code, float scale) {
  return static_cast<float>(code - kSymmetricZeroCode) * scale;
}

// Asymmetric: zero point for a group whose smallest value is `lo` (sanitized). Rounded down,
// so that z <= lo (except for fp16 below -65504, where it saturates).
INT4KV_HOST_DEVICE uint16_t AsymmetricZero(float lo, ParamDtype dtype) {
  return ParamFromFloatDirected(lo, dtype, /*up=*/false);
}

// Scale for a group whose largest value is `hi` (sanitized), given the stored zero point as
// float: (hi - z) / 15 rounded up to the dtype, saturating at its largest finite value. The
// float subtraction and division round to nearest and can leave the top of the grid,
// z + 15 s as DequantizeAsymmetric computes it, just below hi; then s takes one step more.
// With z <= lo, every x of the group then lies within half a stored step of a grid point.
// s is 0 only when hi == z, a constant group that z stores exactly. Inputs are clamped to
// +-kMaxQuantInput, so hi - z cannot overflow float; the former hi/15 - lo/15 form, which
// guarded against that, is not needed.
INT4KV_HOST_DEVICE uint16_t AsymmetricScale(float hi, float zero, ParamDtype dtype) {
  if (!(hi > zero)) return 0;  // +0; also an fp16 group below -65504, where hi < z
  const float top = static_cast<float>(kAsymmetricMaxCode);
  // For float denormals (hi - z) / 15 can underflow to 0; the smallest step still rounds up.
  const float step = fmaxf((hi - zero) / top, BitsToFloat(1u));
  const uint16_t scale = ParamFromFloatDirected(step, dtype, /*up=*/true);
  const float stored = ParamToFloat(scale, dtype);
  if (fmaf(top, stored, zero) < hi && stored < ParamLimit(dtype)) {
    return NextParam(scale, /*up=*/true);
  }
  return scale;
}

INT4KV_HOST_DEVICE int AsymmetricCode(float x, float scale, float zero, QuantRounding rounding) {
  if (scale == 0.0f) return 0;
  const float q = RoundScaled((x - zero) / scale, rounding);
  const float clamped = fminf(fmaxf(q, 0.0f), static_cast<float>(kAsymmetricMaxCode));
  return static_cast<int>(clamped);
}

INT4KV_HOST_DEVICE float DequantizeAsymmetric(int code, float scale, float zero) {
  return fmaf(static_cast<float>(code), scale, zero);
}

// Quantizes one head row of `head_dim` values into its packed bytes and per-group params.
// `load(i)` returns element i as float. `row_bytes` gets head_dim / 2 bytes, `scales` and
// `zeros` (asymmetric only; may be null otherwise) get head_dim / group_size entries.
template <typename LoadFn>
INT4KV_HOST_DEVICE void QuantizeRow(LoadFn load, int head_dim, int group_size, ParamDtype dtype,
                                    QuantMode mode, QuantRounding rounding, uint8_t* row_bytes,
                                    uint16_t* scales, uint16_t* zeros) {
  for (int g = 0; g < head_dim / group_size; ++g) {
    const int begin = g * group_size;
    float lo = FLT_MAX, hi = -FLT_MAX, absmax = 0.0f;
    for (int i = begin; i < begin + group_size; ++i) {
      const float x = SanitizeForQuant(load(i));
      lo = fminf(lo, x);
      hi = fmaxf(hi, x);
      absmax = fmaxf(absmax, fabsf(x));
    }
    float scale = 0.0f, zero = 0.0f;
    if (mode == QuantMode::kSymmetric) {
      scales[g] = SymmetricScale(absmax, dtype);
      scale = ParamToFloat(scales[g], dtype);
    } else {
      zeros[g] = AsymmetricZero(lo, dtype);
      zero = ParamToFloat(zeros[g], dtype);
      scales[g] = AsymmetricScale(hi, zero, dtype);
      scale = ParamToFloat(scales[g], dtype);
    }
    for (int i = begin; i < begin + group_size; i += 2) {
      const float x0 = SanitizeForQuant(load(i));
      const float x1 = SanitizeForQuant(load(i + 1));
      int c0, c1;
      if (mode == QuantMode::kSymmetric) {
        c0 = SymmetricCode(x0, scale, rounding);
        c1 = SymmetricCode(x1, scale, rounding);
      } else {
        c0 = AsymmetricCode(x0, scale, zero, rounding);
        c1 = AsymmetricCode(x1, scale, zero, rounding);
      }
      row_bytes[i / 2] = PackCodes(c0, c1);
    }
  }
}

// Dequantizes element i of a row from its packed bytes and params.
INT4KV_HOST_DEVICE float DequantizeElement(const uint8_t* row_bytes, const uint16_t* scales,
                                           const uint16_t* zeros, int i, int group_size,
                                           ParamDtype dtype, QuantMode mode) {
  const uint8_t byte = row_bytes[i / 2];
  const int code = (i & 1) ? HighCode(byte) : LowCode(byte);
  const float scale = ParamToFloat(scales[i / group_size], dtype);
  if (mode == QuantMode::kSymmetric) return DequantizeSymmetric(code, scale);
  return DequantizeAsymmetric(code, scale, ParamToFloat(zeros[i / group_size], dtype));
}

}  // namespace int4kv

#endif  // INT4KV_KV_CACHE_QUANTIZE_H_
