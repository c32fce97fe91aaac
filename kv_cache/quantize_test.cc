#include "kv_cache/quantize.h"

#include <algorithm>
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

// Every finite value of a parameter dtype, in increasing order (for directed rounding).
const std::vector<float>& FiniteParamValues(ParamDtype dtype) {
  static const std::vector<float>* const values[2] = {
      [] {
        auto* v = new std::vector<float>;
        for (uint32_t h = 0; h < 0x10000; ++h) {
          const float f = RefHalfToFloat(static_cast<uint16_t>(h));
          if (std::isfinite(f)) v->push_back(f);
        }
        std::sort(v->begin(), v->end());
        return v;
      }(),
      [] {
        auto* v = new std::vector<float>;
        for (uint32_t b = 0; b < 0x10000; ++b) {
          const float f = Bf16Value(b);
          if (std::isfinite(f)) v->push_back(f);
        }
        std::sort(v->begin(), v->end());
        return v;
      }(),
  };
  return *values[dtype == ParamDtype::kFloat16 ? 0 : 1];
}

// Largest finite dtype value <= value, or the most negative finite one if there is none.
float RefParamDown(float value, ParamDtype dtype) {
  const std::vector<float>& v = FiniteParamValues(dtype);
  auto it = std::upper_bound(v.begin(), v.end(), value);
  return it == v.begin() ? v.front() : *(it - 1);
}

// Smallest finite dtype value >= value, or the largest finite one if there is none.
float RefParamUp(float value, ParamDtype dtype) {
  const std::vector<float>& v = FiniteParamValues(dtype);
  auto it = std::lower_bound(v.begin(), v.end(), value);
  return it == v.end() ? v.back() : *it;
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
    // z: lo rounded down; s: (hi - z) / 15 rounded up, one step more if the top of the grid
    // still falls short of hi.
    *zero = RefParamDown(lo, dtype);
    *scale = 0.0f;
    if (hi > *zero) {
      const float step = std::max((hi - *zero) / 15.0f, std::numeric_limits<float>::denorm_min());
      *scale = RefParamUp(step, dtype);
      if (std::fma(15.0f, *scale, *zero) < hi) {
        *scale = RefParamUp(std::nextafter(*scale, std::numeric_limits<float>::infinity()), dtype);
      }
    }
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
  // The layout LightLLM's kernels read: element 2j in the low nibble, 2j + 1 in the high one.
  // Checked against literal bytes, since a swap in PackCodes, LowCode and HighCode together
  // would pass the round trip below.
  EXPECT_EQ(PackCodes(0x3, 0xA), 0xA3);
  EXPECT_EQ(PackCodes(0xF, 0x0), 0x0F);
  EXPECT_EQ(LowCode(0xA3), 0x3);
  EXPECT_EQ(HighCode(0xA3), 0xA);
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
  // The same codes as bytes, element 2j in the low nibble.
  EXPECT_EQ(q.bytes, (std::vector<uint8_t>{0x7E, 0x99, 0x57, 0x7B}));
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
      std::vector<float>(8, -1e5f),  // all below fp16's range: its zero point saturates
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

// Quantizes x (one row, asymmetric) and checks that every element comes back within half a
// stored step, then that z <= min and that code 15 reaches max. The tolerance is a few float
// ulps of x, for the float arithmetic of quantization and dequantization.
void ExpectAsymmetricWithinHalfAStep(const std::vector<float>& x, int group, ParamDtype dtype) {
  const Quantized q = QuantizeWith(x, group, dtype, QuantMode::kAsymmetric);
  for (size_t g = 0; g < x.size() / group; ++g) {
    const float scale = ParamToFloat(q.scales[g], dtype);
    const float zero = ParamToFloat(q.zeros[g], dtype);
    for (int i = 0; i < group; ++i) {
      const size_t e = g * group + i;
      const float restored =
          DequantizeElement(q.bytes.data(), q.scales.data(), q.zeros.data(), static_cast<int>(e),
                            group, dtype, QuantMode::kAsymmetric);
      const float tolerance = 4.0f * FLT_EPSILON * std::fabs(x[e]);
      ASSERT_LE(std::fabs(restored - x[e]), 0.5f * scale + tolerance)
          << "element " << e << " x " << x[e] << " z " << zero << " s " << scale;
    }
    const auto begin = x.begin() + g * group;
    ASSERT_LE(zero, *std::min_element(begin, begin + group)) << "group " << g;
    ASSERT_GE(DequantizeAsymmetric(15, scale, zero), *std::max_element(begin, begin + group))
        << "group " << g;
  }
}

TEST(QuantizeTest, AsymmetricGridCoversGroupsFarFromZero) {
  // fp16: z = 1000 (steps of 0.5 there); rounding lo to nearest gave z = 1000 and s = 0.1 / 15,
  // a grid that ends at 1000.1, 30 steps below 1000.3.
  ExpectAsymmetricWithinHalfAStep(
      {1000.2f, 1000.3f, 1000.25f, 1000.22f, 1000.28f, 1000.21f, 1000.29f, 1000.26f}, 8,
      ParamDtype::kFloat16);
  // bf16: z = 100 (steps of 0.5); rounding to nearest gave z = 100.5, above every value.
  ExpectAsymmetricWithinHalfAStep(
      {100.3f, 100.5f, 100.4f, 100.35f, 100.45f, 100.32f, 100.48f, 100.41f}, 8,
      ParamDtype::kBFloat16);
  // Negative offsets: z rounds away from zero.
  ExpectAsymmetricWithinHalfAStep(
      {-1000.3f, -1000.2f, -1000.25f, -1000.22f, -1000.28f, -1000.21f, -1000.29f, -1000.26f}, 8,
      ParamDtype::kFloat16);
  ExpectAsymmetricWithinHalfAStep(
      {-100.5f, -100.3f, -100.4f, -100.35f, -100.45f, -100.32f, -100.48f, -100.41f}, 8,
      ParamDtype::kBFloat16);
}

TEST(QuantizeTest, AsymmetricRoundTripWithinHalfAStepOnOffsetGroups) {
  std::mt19937 rng(13);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  for (ParamDtype dtype : {ParamDtype::kFloat16, ParamDtype::kBFloat16}) {
    // Offsets stay well inside fp16 so that its parameters do not saturate.
    const float max_exponent = dtype == ParamDtype::kFloat16 ? 4.0f : 30.0f;
    const float min_exponent = dtype == ParamDtype::kFloat16 ? -3.0f : -30.0f;
    for (int group : {8, 16, 32, 64, 128}) {
      for (int trial = 0; trial < 400; ++trial) {
        std::vector<float> x(128);
        for (int g = 0; g < 128 / group; ++g) {
          // A group of width 1e-5 .. 0.3 times its offset, so that z's rounding is large
          // against the group's step.
          const float sign = unit(rng) < 0.5f ? -1.0f : 1.0f;
          const float offset =
              sign * std::pow(10.0f, min_exponent + (max_exponent - min_exponent) * unit(rng));
          const float width = std::fabs(offset) * std::pow(10.0f, -5.0f + 4.5f * unit(rng));
          for (int i = 0; i < group; ++i) x[g * group + i] = offset + width * unit(rng);
        }
        ASSERT_NO_FATAL_FAILURE(ExpectAsymmetricWithinHalfAStep(x, group, dtype));
        ASSERT_NO_FATAL_FAILURE(ExpectMatchesReference(x, group, dtype, QuantMode::kAsymmetric));
      }
    }
  }
}

TEST(QuantizeTest, AsymmetricScaleStepsUpWhereFloatRoundingFallsShort) {
  // fp16: z = -0.0200042725 and (hi - z) / 15 is exactly 18 in float, but z + 15 * 18 =
  // 269.97998 < 269.98; the scale takes the next step up.
  const std::vector<float> half = {-0.02f, 269.98f, 0.0f, 100.0f, 200.0f, 135.0f, -0.01f, 269.0f};
  const Quantized q16 = QuantizeWith(half, 8, ParamDtype::kFloat16, QuantMode::kAsymmetric);
  EXPECT_EQ(HalfBitsToFloat(q16.scales[0]), 18.015625f);
  ExpectAsymmetricWithinHalfAStep(half, 8, ParamDtype::kFloat16);
  ExpectMatchesReference(half, 8, ParamDtype::kFloat16, QuantMode::kAsymmetric);
  // bf16: z = -50.75 and (hi - z) / 15 is 5 in float, but z + 15 * 5 = 24.25 < 24.2500019.
  const std::vector<float> bf = {-50.5270042f, 24.2500019f, 0.0f, 1.0f, -2.0f, 3.0f, -5.0f, 4.0f};
  const Quantized q_bf = QuantizeWith(bf, 8, ParamDtype::kBFloat16, QuantMode::kAsymmetric);
  EXPECT_EQ(Bf16BitsToFloat(q_bf.scales[0]), 5.03125f);
  ExpectAsymmetricWithinHalfAStep(bf, 8, ParamDtype::kBFloat16);
  ExpectMatchesReference(bf, 8, ParamDtype::kBFloat16, QuantMode::kAsymmetric);
}

TEST(QuantizeTest, AsymmetricConstantGroups) {
  for (ParamDtype dtype : {ParamDtype::kFloat16, ParamDtype::kBFloat16}) {
    // Exactly representable: s = 0, and every element comes back exactly.
    for (float value : {1.5f, -3.0f, 0.0f}) {
      const std::vector<float> x(8, value);
      const Quantized q = QuantizeWith(x, 8, dtype, QuantMode::kAsymmetric);
      EXPECT_EQ(q.scales[0], 0);
      for (int i = 0; i < 8; ++i) {
        EXPECT_EQ(DequantizeElement(q.bytes.data(), q.scales.data(), q.zeros.data(), i, 8, dtype,
                                    QuantMode::kAsymmetric),
                  value);
      }
    }
    // Not representable: z below the value, and it comes back within half a step.
    ExpectAsymmetricWithinHalfAStep(std::vector<float>(8, 0.1f), 8, dtype);
    ExpectAsymmetricWithinHalfAStep(std::vector<float>(8, -1000.3f), 8, dtype);
  }
}

TEST(QuantizeTest, DirectedParamRoundingSaturatesAtFiniteValues) {
  // fp16: below -65504 the zero point stays at -65504, and scales stop at 65504.
  EXPECT_EQ(ParamFromFloatDirected(-65510.0f, ParamDtype::kFloat16, false), 0xfbffu);
  EXPECT_EQ(ParamFromFloatDirected(-1e37f, ParamDtype::kFloat16, false), 0xfbffu);
  EXPECT_EQ(ParamFromFloatDirected(65504.5f, ParamDtype::kFloat16, true), 0x7bffu);
  EXPECT_EQ(ParamFromFloatDirected(1e37f, ParamDtype::kFloat16, true), 0x7bffu);
  EXPECT_EQ(ParamFromFloatDirected(FLT_MAX, ParamDtype::kBFloat16, true), 0x7f7fu);
  EXPECT_EQ(ParamFromFloatDirected(-FLT_MAX, ParamDtype::kBFloat16, false), 0xff7fu);
  // Around zero: the smallest subnormal of the right sign, and zero stays zero.
  EXPECT_EQ(ParamFromFloatDirected(-1e-10f, ParamDtype::kFloat16, false), 0x8001u);
  EXPECT_EQ(ParamFromFloatDirected(1e-10f, ParamDtype::kFloat16, true), 0x0001u);
  EXPECT_EQ(ParamFromFloatDirected(0.0f, ParamDtype::kFloat16, false), 0x0000u);
  EXPECT_EQ(ParamFromFloatDirected(0.0f, ParamDtype::kBFloat16, true), 0x0000u);
  // Against the sorted table of every finite value.
  std::mt19937 rng(17);
  std::uniform_int_distribution<uint32_t> any_bits;
  for (ParamDtype dtype : {ParamDtype::kFloat16, ParamDtype::kBFloat16}) {
    for (int i = 0; i < 200000; ++i) {
      uint32_t bits = any_bits(rng);
      if (dtype == ParamDtype::kFloat16) bits = (bits & 0x807fffffu) | ((100u + bits % 60u) << 23);
      float f;
      std::memcpy(&f, &bits, 4);
      if (!std::isfinite(f)) continue;
      ASSERT_EQ(ParamToFloat(ParamFromFloatDirected(f, dtype, false), dtype),
                RefParamDown(f, dtype))
          << f;
      ASSERT_EQ(ParamToFloat(ParamFromFloatDirected(f, dtype, true), dtype), RefParamUp(f, dtype))
          << f;
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
