// Host conversions between float and the bits of a 16-bit DType (fp16 or bf16), rounding to
// nearest even as the device does: for code, tests above all, that handles either io dtype.
#ifndef INT4KV_COMMON_HALF_DTYPE_H_
#define INT4KV_COMMON_HALF_DTYPE_H_

#include <cstdint>

#include "common/dtype.h"
#include "common/half.h"

namespace int4kv {

// dtype: kFloat16 or kBFloat16 (anything else is read as kFloat16).
inline uint16_t ToHalfBits(float x, DType dtype) {
  return dtype == DType::kBFloat16 ? FloatToBf16Bits(x) : FloatToHalfBits(x);
}
inline float FromHalfBits(uint16_t bits, DType dtype) {
  return dtype == DType::kBFloat16 ? Bf16BitsToFloat(bits) : HalfBitsToFloat(bits);
}

}  // namespace int4kv

#endif  // INT4KV_COMMON_HALF_DTYPE_H_
