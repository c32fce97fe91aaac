#include "kv_cache/quantize.h"

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "common/half.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

// --- Independent references -------------------------------------------------------------

uint16_t RefHalf(float f) {  // the compiler's own IEEE binary16 conversion
  const _Float16 h = static_cast<_Float16>(f);
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}

float RefHalfToFloat(uint16_t bits) {
  _Float16 h;
  std::memcpy(&h, &bits, 2);
  return static_cast<float>(h);
}

float Bf16Value(uint32_t top) {
  const uint32_t bits = top << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Nearest bfloat16 by comparing the two neighbours in double; ties go to the even one.
uint16_t RefBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint32_t down = bits >> 16;
  const uint32_t up = down + 1;
  const double d_down = std::fabs(static_cast<double>(f) - Bf16Value(down));
  const double d_up = std::fabs(static_cast<double>(f) - Bf16Value(up));
  if (d_down < d_up) return static_cast<uint16_t>(down);
  if (d_up < d_down) return static_cast<uint16_t>(up);
  return static_cast<uint16_t>((down & 1) ? up : down);
}

float RefParamValue(float value, ParamDtype dtype) {
  if (dtype == ParamDtype::kFloat16) {
    value = std::min(std::max(value, -65504.0f), 65504.0f);
    return RefHalfToFloat(RefHalf(value));
  }
  const float largest = Bf16Value(0x7f7f);
  value = std::min(std::max(value, -largest), largest);
  return Bf16Value(RefBf16(value));
}

float RefSanitize(float x) {
  if (std::isnan(x)) return 0.0f;
  return std::min(std::max(x, -1e37f), 1e37f);
}

// Plain scalar quantizer written from the formulas in int4_layout.h.
void RefQuantizeGroup(const std::vector<float>& raw, ParamDtype dtype, QuantMode mode,
                      std::vector<int>* codes, float* scale, float* zero) {
  std::vector<float> x(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) x[i] = RefSanitize(raw[i]);
  float lo = x[0], hi = x[0], absmax = 0.0f;
  for (float v : x) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    absmax = std::max(absmax, std::fabs(v));
  }
  codes->clear();
  if (mode == QuantMode::kSymmetric) {
    *scale = RefParamValue(absmax / 7.0f, dtype);
    *zero = 0.0f;
    for (float v : x) {
      int c = 0;
      if (*scale != 0.0f) {
        const float r = std::nearbyint(v / *scale);
        c = static_cast<int>(std::min(std::max(r, -7.0f), 7.0f));
      }
      codes->push_back(c + 7);
    }
  } else {
    *scale = RefParamValue(hi / 15.0f - lo / 15.0f, dtype);
    *zero = RefParamValue(lo, dtype);
    for (float v : x) {
      int c = 0;
      if (*scale != 0.0f) {
        const float r = std::nearbyint((v - *zero) / *scale);
        c = static_cast<int>(std::min(std::max(r, 0.0f), 15.0f));
      }
      codes->push_back(c);
    }
  }
}

struct Quantized {
  std::vector<uint8_t> bytes;
  std::vector<uint16_t> scales, zeros;
};

Quantized QuantizeWith(const std::vector<float>& x, int group, ParamDtype dtype, QuantMode mode) {
  Quantized q;
  q.bytes.assign(x.size() / 2, 0xAB);
  q.scales.assign(x.size() / group, 0xDEAD);
  q.zeros.assign(x.size() / group, 0xBEEF);
  QuantizeRow([&](int i) { return x[i]; }, static_cast<int>(x.size()), group, dtype, mode,
              QuantRounding::kNearestEven, q.bytes.data(), q.scales.data(), q.zeros.data());
  return q;
}

void ExpectMatchesReference(const std::vector<float>& x, int group, ParamDtype dtype,
                            QuantMode mode) {
  const Quantized q = QuantizeWith(x, group, dtype, mode);
  for (size_t g = 0; g < x.size() / group; ++g) {
    std::vector<float> values(x.begin() + g * group, x.begin() + (g + 1) * group);
    std::vector<int> codes;
    float scale, zero;
    RefQuantizeGroup(values, dtype, mode, &codes, &scale, &zero);
    ASSERT_EQ(ParamToFloat(q.scales[g], dtype), scale) << "group " << g;
    if (mode == QuantMode::kAsymmetric) {
      ASSERT_EQ(ParamToFloat(q.zeros[g], dtype), zero) << "group " << g;
    }
    for (int i = 0; i < group; ++i) {
      const size_t e = g * group + i;
      const uint8_t byte = q.bytes[e / 2];
      const int code = (e & 1) ? HighCode(byte) : LowCode(byte);
      ASSERT_EQ(code, codes[i]) << "element " << e << " value " << x[e];
      const float restored = DequantizeElement(q.bytes.data(), q.scales.data(), q.zeros.data(),
                                               static_cast<int>(e), group, dtype, mode);
      ASSERT_TRUE(std::isfinite(restored)) << "element " << e;
    }
  }
}

// --- Conversions --------------------------------------------------------------------------

TEST(HalfTest, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    const float f = HalfBitsToFloat(bits);
    if (std::isnan(f)) continue;
    ASSERT_EQ(f, RefHalfToFloat(bits)) << std::hex << h;
    ASSERT_EQ(FloatToHalfBits(f), bits) << std::hex << h;
  }
}

TEST(HalfTest, FloatToHalfMatchesCompilerOnRandomAndEdgeValues) {
  std::mt19937 rng(7);
  std::vector<float> values = {0.0f,
                               -0.0f,
                               65504.0f,
                               65519.99f,
                               65520.0f,
                               1e9f,
                               -1e9f,
                               6.1035156e-05f,
                               5.9604645e-08f,
                               2.9802322e-08f,
                               2.98e-08f,
                               2.99e-08f,
                               1e-30f,
                               FLT_MAX,
                               -FLT_MAX,
                               std::numeric_limits<float>::infinity(),
                               std::numeric_limits<float>::denorm_min()};
  // Exact midpoints between neighbouring halves (ties) across the whole range.
  for (uint32_t h = 1; h < 0x7bff; h += 37) {
    values.push_back(0.5f * (RefHalfToFloat(h) + RefHalfToFloat(h + 1)));
  }
  std::uniform_int_distribution<uint32_t> any_bits;
  for (int i = 0; i < 200000; ++i) {
    uint32_t bits = any_bits(rng);
    bits = (bits & 0x807fffffu) | ((100u + bits % 60u) << 23);  // exponents around half's range
    float f;
    std::memcpy(&f, &bits, 4);
    values.push_back(f);
  }
  for (float f : values) ASSERT_EQ(FloatToHalfBits(f), RefHalf(f)) << f;
}

TEST(Bf16Test, MatchesNearestEvenReference) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<uint32_t> any_bits;
  for (int i = 0; i < 200000; ++i) {
    uint32_t bits = any_bits(rng);
    if (i % 4 == 0) bits = (bits & 0xffff0000u) | 0x8000u;  // exact ties
    float f;
    std::memcpy(&f, &bits, 4);
    if (!std::isfinite(f) || std::fabs(f) > 3.38e38f) continue;
    ASSERT_EQ(FloatToBf16Bits(f), RefBf16(f)) << f;
    ASSERT_EQ(Bf16BitsToFloat(FloatToBf16Bits(f)), Bf16Value(RefBf16(f)));
  }
}

// --- Quantizer ----------------------------------------------------------------------------

TEST(QuantizeTest, PackUnpackIsBitExact) {
  for (int low = 0; low < 16; ++low) {
    for (int high = 0; high < 16; ++high) {
      const uint8_t byte = PackCodes(low, high);
      EXPECT_EQ(LowCode(byte), low);
      EXPECT_EQ(HighCode(byte), high);
    }
  }
}

TEST(QuantizeTest, MatchesScalarReferenceOnRandomData) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  for (ParamDtype dtype : {ParamDtype::kFloat16, ParamDtype::kBFloat16}) {
    for (QuantMode mode : {QuantMode::kSymmetric, QuantMode::kAsymmetric}) {
      for (int group : {8, 16, 32, 64, 128}) {
        for (int trial = 0; trial < 20; ++trial) {
          std::vector<float> x(256);
          const float magnitude = std::pow(10.0f, static_cast<float>(trial % 7) - 3.0f);
          for (float& v : x) v = normal(rng) * magnitude;
          ExpectMatchesReference(x, group, dtype, mode);
        }
      }
    }
  }
}

TEST(QuantizeTest, ExactTiesRoundToEven) {
  // absmax 7 -> scale exactly 1, so x / scale lands exactly on .5 ties.
  const std::vector<float> x = {7.0f, 0.5f, 1.5f, 2.5f, -0.5f, -2.5f, 3.5f, 0.0f};
  const Quantized q = QuantizeWith(x, 8, ParamDtype::kFloat16, QuantMode::kSymmetric);
  EXPECT_EQ(HalfBitsToFloat(q.scales[0]), 1.0f);
  const std::vector<int> expected = {14, 7, 9, 9, 7, 5, 11, 7};
  for (int i = 0; i < 8; ++i) {
    const int code = (i & 1) ? HighCode(q.bytes[i / 2]) : LowCode(q.bytes[i / 2]);
    EXPECT_EQ(code, expected[i]) << "x = " << x[i];
  }
  ExpectMatchesReference(x, 8, ParamDtype::kBFloat16, QuantMode::kAsymmetric);
}

TEST(QuantizeTest, AllZeroGroupGivesScaleZeroAndExactZeros) {
  for (QuantMode mode : {QuantMode::kSymmetric, QuantMode::kAsymmetric}) {
    const std::vector<float> x(16, 0.0f);
    const Quantized q = QuantizeWith(x, 16, ParamDtype::kFloat16, mode);
    EXPECT_EQ(q.scales[0], 0);
    for (int i = 0; i < 16; ++i) {
      EXPECT_EQ(DequantizeElement(q.bytes.data(), q.scales.data(), q.zeros.data(), i, 16,
                                  ParamDtype::kFloat16, mode),
                0.0f);
    }
  }
}

TEST(QuantizeTest, DenormalsAndHugeValuesStayFinite) {
  const float tiny = std::numeric_limits<float>::denorm_min();
  const std::vector<std::vector<float>> groups = {
      {1e-40f, -3e-41f, tiny, 0.0f, 2e-39f, -1e-39f, 5e-40f, tiny * 3},  // float denormals
      {1e-7f, -2e-7f, 3e-8f, 0.0f, 1e-6f, 0.0f, -5e-7f, 6e-8f},          // fp16 subnormals
      {1e30f, -3e35f, 1.0f, 0.0f, FLT_MAX, -FLT_MAX, 2e38f, 5.0f},       // huge
      {70000.0f, -1e6f, 0.5f, 3.0f, 65504.0f, 4e5f, -8e5f, 1.0f},        // past fp16 * 7
  };
  for (ParamDtype dtype : {ParamDtype::kFloat16, ParamDtype::kBFloat16}) {
    for (QuantMode mode : {QuantMode::kSymmetric, QuantMode::kAsymmetric}) {
      for (const auto& x : groups) ExpectMatchesReference(x, 8, dtype, mode);
    }
  }
}

TEST(QuantizeTest, RoundTripErrorIsAtMostHalfAStep) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> uniform(-3.0f, 3.0f);
  for (QuantMode mode : {QuantMode::kSymmetric, QuantMode::kAsymmetric}) {
    std::vector<float> x(128);
    for (float& v : x) v = uniform(rng);
    const Quantized q = QuantizeWith(x, 32, ParamDtype::kFloat16, mode);
    for (int i = 0; i < 128; ++i) {
      const float scale = HalfBitsToFloat(q.scales[i / 32]);
      const float restored = DequantizeElement(q.bytes.data(), q.scales.data(), q.zeros.data(), i,
                                               32, ParamDtype::kFloat16, mode);
      // Half a step, plus the rounding of the stored scale/zero to fp16.
      EXPECT_LE(std::fabs(restored - x[i]), 0.5f * scale + 2e-3f) << i;
    }
  }
}

TEST(QuantizeTest, NonFiniteInputIsSanitizedAsDocumented) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> x = {nan, 1.0f, inf, -inf, 2.0f, nan, -1.0f, 0.5f};
  for (ParamDtype dtype : {ParamDtype::kFloat16, ParamDtype::kBFloat16}) {
    for (QuantMode mode : {QuantMode::kSymmetric, QuantMode::kAsymmetric}) {
      ExpectMatchesReference(x, 8, dtype, mode);
      const Quantized q = QuantizeWith(x, 8, dtype, mode);
      for (int i = 0; i < 8; ++i) {
        const float v =
            DequantizeElement(q.bytes.data(), q.scales.data(), q.zeros.data(), i, 8, dtype, mode);
        EXPECT_TRUE(std::isfinite(v)) << i;
      }
      // +Inf saturates to the top of the grid, -Inf to the bottom.
      const int top = mode == QuantMode::kSymmetric ? 14 : 15;
      EXPECT_EQ(LowCode(q.bytes[1]), top);
      EXPECT_EQ(HighCode(q.bytes[1]), 0);
    }
  }
  // NaN alone is stored as zero.
  const Quantized q = QuantizeWith({nan, nan, nan, nan, nan, nan, nan, nan}, 8,
                                   ParamDtype::kFloat16, QuantMode::kSymmetric);
  EXPECT_EQ(q.scales[0], 0);
  EXPECT_EQ(LowCode(q.bytes[0]), 7);
}

TEST(QuantizeTest, TruncationIsLightLlmsRule) {
  const std::vector<float> x = {7.0f, 0.9f, 1.9f, -1.9f, -0.6f, 2.5f, 6.99f, 0.0f};
  std::vector<uint8_t> bytes(4);
  std::vector<uint16_t> scales(1);
  QuantizeRow([&](int i) { return x[i]; }, 8, 8, ParamDtype::kFloat16, QuantMode::kSymmetric,
              QuantRounding::kTruncate, bytes.data(), scales.data(), nullptr);
  const std::vector<int> expected = {14, 7, 8, 6, 7, 9, 13, 7};
  for (int i = 0; i < 8; ++i) {
    const int code = (i & 1) ? HighCode(bytes[i / 2]) : LowCode(bytes[i / 2]);
    EXPECT_EQ(code, expected[i]) << x[i];
  }
}

}  // namespace
}  // namespace int4kv
