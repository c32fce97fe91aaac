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

// Rounds a parameter to the pool dtype, saturating at its largest finite value.
INT4KV_HOST_DEVICE uint16_t ParamFromFloat(float value, ParamDtype dtype) {
  const float limit = dtype == ParamDtype::kFloat16 ? kMaxFloat16 : kMaxBFloat16;
  return FloatToParam(fminf(fmaxf(value, -limit), limit), dtype);
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

// Asymmetric: scale and zero point for a group spanning [lo, hi] (sanitized).
INT4KV_HOST_DEVICE uint16_t AsymmetricScale(float lo, float hi, ParamDtype dtype) {
  // hi/15 - lo/15 rather than (hi - lo)/15: the difference of two huge values cannot overflow.
  const float range = static_cast<float>(kAsymmetricMaxCode);
  return ParamFromFloat(hi / range - lo / range, dtype);
}

INT4KV_HOST_DEVICE uint16_t AsymmetricZero(float lo, ParamDtype dtype) {
  return ParamFromFloat(lo, dtype);
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
      scales[g] = AsymmetricScale(lo, hi, dtype);
      zeros[g] = AsymmetricZero(lo, dtype);
      scale = ParamToFloat(scales[g], dtype);
      zero = ParamToFloat(zeros[g], dtype);
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
