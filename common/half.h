// Bit-exact float <-> fp16 / bf16 conversions (round to nearest, ties to even) that compile
// for both host and device, so the CPU and CUDA quantizers write identical bytes.
#ifndef INT4KV_COMMON_HALF_H_
#define INT4KV_COMMON_HALF_H_

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define INT4KV_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define INT4KV_HOST_DEVICE inline
#endif

namespace int4kv {

INT4KV_HOST_DEVICE uint32_t FloatBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

INT4KV_HOST_DEVICE float BitsToFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

// IEEE binary16, round to nearest even; overflow gives +-inf, NaN stays NaN.
INT4KV_HOST_DEVICE uint16_t FloatToHalfBits(float f) {
  const uint32_t x = FloatBits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or NaN
    return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (abs < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);  // below half of min subnormal
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - exp;  // so that the result is mant >> (shift - 10 + ...)
    // value = mant * 2^(exp-150); half subnormal unit is 2^-24 -> code = mant >> (126 - exp).
    uint32_t code = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t half_unit = 1u << (shift - 1u);
    if (rem > half_unit || (rem == half_unit && (code & 1u))) ++code;
    return static_cast<uint16_t>(sign | code);
  }
  // Normal range: rebias exponent (127 -> 15) and round the 13 dropped mantissa bits.
  uint32_t code = ((abs - 0x38000000u) >> 13);
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (code & 1u))) ++code;
  return static_cast<uint16_t>(sign | code);
}

INT4KV_HOST_DEVICE float HalfBitsToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1fu) return BitsToFloat(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    // Subnormal or zero: mant * 2^-24, exact in float.
    const float magnitude = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -magnitude : magnitude;
  }
  return BitsToFloat(sign | ((exp + 112u) << 23) | (mant << 13));
}

// bfloat16 (the top 16 bits of a float), round to nearest even; NaN stays NaN.
INT4KV_HOST_DEVICE uint16_t FloatToBf16Bits(float f) {
  const uint32_t x = FloatBits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  const uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>((x + rounding) >> 16);
}

INT4KV_HOST_DEVICE float Bf16BitsToFloat(uint16_t b) {
  return BitsToFloat(static_cast<uint32_t>(b) << 16);
}

}  // namespace int4kv

#endif  // INT4KV_COMMON_HALF_H_
