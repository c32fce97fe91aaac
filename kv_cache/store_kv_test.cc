#include "kv_cache/store_kv.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "common/half.h"
#include "gtest/gtest.h"
#include "kv_cache/kv_cache.h"

namespace int4kv {
namespace {

KvCacheConfig SmallConfig(QuantMode mode, int group) {
  KvCacheConfig config;
  config.num_layers = 2;
  config.kv_heads = 2;
  config.head_dim = 32;
  config.group_size = group;
  config.quant_mode = mode;
  config.capacity_slots = 16;
  config.max_requests = 2;
  config.max_seq_len = 16;
  return config;
}

std::vector<float> RandomRows(int tokens, int kv_heads, int head_dim, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<size_t>(tokens) * kv_heads * head_dim);
  for (float& v : x) v = normal(rng);
  return x;
}

// Every row dtype, into caches of fp16 and of bf16 parameters.
TEST(StoreKvTest, RoundTripWithinHalfAStepForEveryDtype) {
  for (QuantMode mode : {QuantMode::kSymmetric, QuantMode::kAsymmetric}) {
    for (ParamDtype params : {ParamDtype::kFloat16, ParamDtype::kBFloat16}) {
      SCOPED_TRACE(testing::Message() << QuantModeName(mode) << " " << ParamDtypeName(params));
      KvCacheConfig config = SmallConfig(mode, 8);
      config.param_dtype = params;
      auto cache = *KvCache::Create(config, MemoryKind::kHost);
      const std::vector<float> k = RandomRows(3, 2, 32, 1);
      const std::vector<float> v = RandomRows(3, 2, 32, 2);
      for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
        // Inputs in the dtype under test, and their exact float values.
        std::vector<uint16_t> k16(k.size()), v16(v.size());
        std::vector<float> k_exact = k, v_exact = v;
        for (size_t i = 0; i < k.size(); ++i) {
          if (dtype == DType::kFloat16) {
            k16[i] = FloatToHalfBits(k[i]), v16[i] = FloatToHalfBits(v[i]);
            k_exact[i] = HalfBitsToFloat(k16[i]), v_exact[i] = HalfBitsToFloat(v16[i]);
          } else if (dtype == DType::kBFloat16) {
            k16[i] = FloatToBf16Bits(k[i]), v16[i] = FloatToBf16Bits(v[i]);
            k_exact[i] = Bf16BitsToFloat(k16[i]), v_exact[i] = Bf16BitsToFloat(v16[i]);
          }
        }
        KvRows rows;
        rows.dtype = dtype;
        rows.k = dtype == DType::kFloat32 ? static_cast<const void*>(k.data()) : k16.data();
        rows.v = dtype == DType::kFloat32 ? static_cast<const void*>(v.data()) : v16.data();
        const std::vector<int32_t> slots = {3, 9, 1};
        ASSERT_TRUE(StoreKvHost(cache->view(), 1, slots, rows).ok());
        std::vector<float> out(3 * 4 * 32);
        ASSERT_TRUE(DequantizeHost(cache->view(), 1, slots, out.data()).ok());
        for (int t = 0; t < 3; ++t) {
          for (int row = 0; row < 4; ++row) {
            const std::vector<float>& src = row < 2 ? k_exact : v_exact;
            const uint16_t* scales = cache->view().RowScales(1, slots[t], row);
            // The tolerance below scales with the stored step, so the step itself is checked
            // against the group's range first: a step too large would pass any round trip.
            for (int g = 0; g < 4; ++g) {
              const float* x = &src[(t * 2 + row % 2) * 32 + g * 8];
              const float lo = *std::min_element(x, x + 8), hi = *std::max_element(x, x + 8);
              const float step = ParamToFloat(scales[g], params);
              // Parameters round to 8 (bf16) or 11 (fp16) significant bits; asymmetric z rounds
              // down by up to one unit of |lo|, and s may take one more step up.
              if (mode == QuantMode::kSymmetric) {
                const float want = std::max(-lo, hi) / 7;
                EXPECT_NEAR(step, want, want * 0x1p-8f) << "token " << t << " row " << row;
              } else {
                const float want = (hi - lo) / 15;
                EXPECT_GE(step, want * (1 - 0x1p-8f)) << "token " << t << " row " << row;
                EXPECT_LE(step, want * (1 + 0x1p-6f) + std::fabs(lo) * 0x1p-6f / 15)
                    << "token " << t << " row " << row;
              }
            }
            for (int d = 0; d < 32; ++d) {
              const float want = src[(t * 2 + row % 2) * 32 + d];
              const float got = out[(t * 4 + row) * 32 + d];
              const float step = ParamToFloat(scales[d / 8], params);
              EXPECT_LE(std::fabs(got - want), 0.5f * step + 1e-3f)
                  << "token " << t << " row " << row << " dim " << d;
            }
          }
        }
        // Layer 0 was never written: still zeros.
        ASSERT_TRUE(DequantizeHost(cache->view(), 0, slots, out.data()).ok());
        for (float x : out) EXPECT_EQ(x, 0.0f);
      }
    }
  }
}

TEST(StoreKvTest, TokenStrideReadsInterleavedRows) {
  const KvCacheConfig config = SmallConfig(QuantMode::kSymmetric, 16);
  auto cache = *KvCache::Create(config, MemoryKind::kHost);
  // Packed [token][k heads | v heads] like a fused QKV projection output.
  const std::vector<float> qkv = RandomRows(2, 4, 32, 5);
  KvRows strided{qkv.data(), qkv.data() + 64, DType::kFloat32, 128};
  ASSERT_TRUE(StoreKvHost(cache->view(), 0, {4, 5}, strided).ok());
  std::vector<float> k(2 * 64), v(2 * 64);
  for (int t = 0; t < 2; ++t) {
    std::copy_n(qkv.begin() + t * 128, 64, k.begin() + t * 64);
    std::copy_n(qkv.begin() + t * 128 + 64, 64, v.begin() + t * 64);
  }
  KvRows dense{k.data(), v.data(), DType::kFloat32, 0};
  ASSERT_TRUE(StoreKvHost(cache->view(), 1, {4, 5}, dense).ok());
  // A stride equal to the row's length is the dense layout given explicitly.
  KvRows explicit_dense{k.data(), v.data(), DType::kFloat32, 64};
  ASSERT_TRUE(StoreKvHost(cache->view(), 1, {6, 7}, explicit_dense).ok());
  for (int row = 0; row < 4; ++row) {
    for (int b = 0; b < 16; ++b) {
      EXPECT_EQ(cache->view().Row(1, 6, row)[b], cache->view().Row(1, 4, row)[b]);
    }
  }
  const int scales_per_row = config.head_dim / config.group_size;
  for (int32_t slot : {4, 5}) {
    for (int row = 0; row < 4; ++row) {
      for (int b = 0; b < 16; ++b) {
        EXPECT_EQ(cache->view().Row(0, slot, row)[b], cache->view().Row(1, slot, row)[b]);
      }
      for (int g = 0; g < scales_per_row; ++g) {
        EXPECT_EQ(cache->view().RowScales(0, slot, row)[g],
                  cache->view().RowScales(1, slot, row)[g])
            << "slot " << slot << " row " << row << " group " << g;
        EXPECT_NE(cache->view().RowScales(0, slot, row)[g], 0) << "random rows have nonzero scales";
      }
    }
  }
}

// A slot listed twice holds the later token's bytes, as if only that token had been stored.
TEST(StoreKvTest, RepeatedSlotKeepsTheLaterToken) {
  const KvCacheConfig config = SmallConfig(QuantMode::kAsymmetric, 8);
  auto cache = *KvCache::Create(config, MemoryKind::kHost);
  const std::vector<float> k = RandomRows(3, 2, 32, 11), v = RandomRows(3, 2, 32, 12);
  ASSERT_TRUE(
      StoreKvHost(cache->view(), 0, {6, 7, 6}, KvRows{k.data(), v.data(), DType::kFloat32, 0})
          .ok());
  // Layer 1 gets token 2 alone in slot 6.
  ASSERT_TRUE(StoreKvHost(cache->view(), 1, {6},
                          KvRows{k.data() + 2 * 64, v.data() + 2 * 64, DType::kFloat32, 0})
                  .ok());
  const KvCacheView& view = cache->view();
  // Slot 6 holds token 2's values, not token 0's (nor nothing): its scales differ from those
  // token 0 alone leaves in slot 8.
  ASSERT_TRUE(StoreKvHost(view, 1, {8}, KvRows{k.data(), v.data(), DType::kFloat32, 0}).ok());
  int differing_scales = 0;
  for (int row = 0; row < 4; ++row) {
    for (int g = 0; g < 4; ++g) {
      ASSERT_NE(view.RowScales(0, 6, row)[g], 0) << "row " << row << " group " << g;
      differing_scales += view.RowScales(0, 6, row)[g] != view.RowScales(1, 8, row)[g];
    }
  }
  EXPECT_GT(differing_scales, 8);
  for (int row = 0; row < 4; ++row) {
    for (int b = 0; b < 16; ++b) ASSERT_EQ(view.Row(0, 6, row)[b], view.Row(1, 6, row)[b]);
    for (int g = 0; g < 4; ++g) {
      ASSERT_EQ(view.RowScales(0, 6, row)[g], view.RowScales(1, 6, row)[g]);
      ASSERT_EQ(view.RowZeros(0, 6, row)[g], view.RowZeros(1, 6, row)[g]);
    }
  }
}

TEST(StoreKvTest, BadInputWritesNothing) {
  const KvCacheConfig config = SmallConfig(QuantMode::kSymmetric, 8);
  auto cache = *KvCache::Create(config, MemoryKind::kHost);
  const std::vector<float> k = RandomRows(2, 2, 32, 1);
  KvRows rows{k.data(), k.data(), DType::kFloat32, 0};
  const KvLayout& layout = cache->view().layout;

  absl::Status status = StoreKvHost(cache->view(), 0, {2, 17}, rows);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("slots[1] = 17"), std::string::npos) << status.message();
  status = StoreKvHost(cache->view(), 2, {2, 3}, rows);
  EXPECT_NE(status.message().find("layer 2"), std::string::npos) << status.message();
  status = StoreKvHost(cache->view(), 0, {2, -1}, rows);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  // Rows not aligned to their elements (the CUDA entry point shares this check: a misaligned
  // load faults on the device).
  KvRows shifted = rows;
  shifted.v = reinterpret_cast<const char*>(k.data()) + 2;
  status = StoreKvHost(cache->view(), 0, {2}, shifted);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("KvRows.v = 0x"), std::string::npos) << status.message();
  EXPECT_NE(status.message().find("is not aligned to its 4-byte elements"), std::string::npos)
      << status.message();
  shifted.dtype = DType::kFloat16;
  shifted.v = reinterpret_cast<const char*>(k.data()) + 1;
  EXPECT_NE(StoreKvHost(cache->view(), 0, {2}, shifted).message().find("2-byte elements"),
            std::string::npos);
  rows.token_stride = 10;
  EXPECT_NE(StoreKvHost(cache->view(), 0, {2}, rows).message().find("token_stride"),
            std::string::npos);
  status = DequantizeHost(cache->view(), 0, {2, 3}, nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "out is null with 2 slots to dequantize");
  EXPECT_TRUE(DequantizeHost(cache->view(), 0, {}, nullptr).ok());  // nothing to write
  for (int64_t i = 0; i < layout.DataPoolBytes(); ++i) ASSERT_EQ(cache->view().data[i], 0);
  for (int64_t i = 0; i < layout.ParamPoolElements(); ++i) {
    ASSERT_EQ(cache->view().scales[i], 0);
  }
}

// A KvCacheView filled by hand is checked (ValidateCacheView) before any pool is touched.
TEST(StoreKvTest, InvalidViewIsRejectedBeforeAnyAccess) {
  const KvCacheConfig config = SmallConfig(QuantMode::kAsymmetric, 8);
  auto cache = *KvCache::Create(config, MemoryKind::kHost);
  const std::vector<float> k = RandomRows(1, 2, 32, 1);
  const KvRows rows{k.data(), k.data(), DType::kFloat32, 0};
  struct BadView {
    std::string names;  // what the message must contain
    std::function<void(KvCacheView&)> spoil;
  };
  const BadView cases[] = {
      {"KvCacheView.zeros is null", [](KvCacheView& v) { v.zeros = nullptr; }},
      {"KvCacheView.zeros is set", [](KvCacheView& v) { v.quant_mode = QuantMode::kSymmetric; }},
      {"KvCacheView.layout.group_size = 0", [](KvCacheView& v) { v.layout.group_size = 0; }},
      {"KvCacheView.data is null", [](KvCacheView& v) { v.data = nullptr; }},
      {"KvCacheView.scales is null", [](KvCacheView& v) { v.scales = nullptr; }},
      {"KvCacheView.layout.num_slots = 1", [](KvCacheView& v) { v.layout.num_slots = 1; }},
      {"KvCacheView.quant_mode = 5",
       [](KvCacheView& v) { v.quant_mode = static_cast<QuantMode>(5); }},
  };
  const std::vector<int32_t> slots = {1};
  std::vector<float> out(4 * 32);
  for (const BadView& bad : cases) {
    KvCacheView view = cache->view();
    bad.spoil(view);
    for (const absl::Status& status :
         {StoreKvHost(view, 0, slots, rows), DequantizeHost(view, 0, slots, out.data()),
          StoreKvHost(view, 0, {}, rows), DequantizeHost(view, 0, {}, out.data())}) {
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad.names;
      EXPECT_NE(status.message().find(bad.names), std::string::npos) << status.message();
    }
  }
  const KvLayout& layout = cache->view().layout;
  for (int64_t i = 0; i < layout.DataPoolBytes(); ++i) ASSERT_EQ(cache->view().data[i], 0);
  for (int64_t i = 0; i < layout.ParamPoolElements(); ++i) {
    ASSERT_EQ(cache->view().scales[i], 0);
    ASSERT_EQ(cache->view().zeros[i], 0);
  }
}

// The store quantizes with the rounding it is given: LightLLM's truncation writes the codes
// of its rule into the row (element 2j in the low nibble), where rounding to nearest would
// write others (0.9 -> 8, not 7).
TEST(StoreKvTest, TruncationReachesTheStoredCodes) {
  const KvCacheConfig config = SmallConfig(QuantMode::kSymmetric, 8);
  auto cache = *KvCache::Create(config, MemoryKind::kHost);
  const std::vector<float> group = {7.0f, 0.9f, 1.9f, -1.9f, -0.6f, 2.5f, 6.99f, 0.0f};
  std::vector<float> k(config.kv_heads * config.head_dim);
  for (size_t i = 0; i < k.size(); ++i) k[i] = group[i % group.size()];
  const KvRows rows{k.data(), k.data(), DType::kFloat32, 0};
  ASSERT_TRUE(StoreKvHost(cache->view(), 1, {3}, rows, QuantRounding::kTruncate).ok());
  // Codes {14, 7, 8, 6, 7, 9, 13, 7} (TruncationIsLightLlmsRule) as bytes.
  const std::vector<uint8_t> truncated = {0x7E, 0x68, 0x97, 0x7D};
  const KvLayout& layout = cache->view().layout;
  for (int32_t row = 0; row < layout.RowsPerSlot(); ++row) {
    const uint8_t* bytes = cache->view().Row(1, 3, row);
    for (int32_t b = 0; b < layout.RowBytes(); ++b) {
      EXPECT_EQ(bytes[b], truncated[b % truncated.size()]) << "row " << row << " byte " << b;
    }
  }
  ASSERT_TRUE(StoreKvHost(cache->view(), 1, {3}, rows, QuantRounding::kNearestEven).ok());
  EXPECT_NE(cache->view().Row(1, 3, 0)[0], truncated[0]) << "both roundings wrote one code";
}

TEST(StoreKvTest, UnknownRoundingIsRejected) {
  const KvCacheConfig config = SmallConfig(QuantMode::kSymmetric, 8);
  auto cache = *KvCache::Create(config, MemoryKind::kHost);
  const std::vector<float> k = RandomRows(1, 2, 32, 1);
  const KvRows rows{k.data(), k.data(), DType::kFloat32, 0};
  const absl::Status status =
      StoreKvHost(cache->view(), 0, {1}, rows, static_cast<QuantRounding>(2));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "rounding = 2 is invalid: must be QuantRounding::kNearestEven (0) or kTruncate (1)");
  EXPECT_EQ(CheckRounding(static_cast<QuantRounding>(2)).message(), status.message());
  // Refused with no slots too: the argument is wrong whatever is stored.
  EXPECT_EQ(StoreKvHost(cache->view(), 0, {}, rows, static_cast<QuantRounding>(2)).message(),
            status.message());
  const KvLayout& layout = cache->view().layout;
  for (int64_t i = 0; i < layout.DataPoolBytes(); ++i) ASSERT_EQ(cache->view().data[i], 0);
}

TEST(StoreKvTest, UnknownRowDtypeIsRejected) {
  const KvCacheConfig config = SmallConfig(QuantMode::kSymmetric, 8);
  auto cache = *KvCache::Create(config, MemoryKind::kHost);
  const std::vector<float> k = RandomRows(1, 2, 32, 1);
  for (const int bad : {3, 7, -1}) {
    const KvRows rows{k.data(), k.data(), static_cast<DType>(bad), 0};
    const absl::Status status = StoreKvHost(cache->view(), 0, {1}, rows);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(status.message(),
              "KvRows.dtype = " + std::to_string(bad) +
                  " is invalid: must be float32 (0), float16 (1) or bfloat16 (2)");
    EXPECT_EQ(CheckRows(rows, cache->view().layout).message(), status.message());
  }
  const KvLayout& layout = cache->view().layout;
  for (int64_t i = 0; i < layout.DataPoolBytes(); ++i) ASSERT_EQ(cache->view().data[i], 0);
  for (int64_t i = 0; i < layout.ParamPoolElements(); ++i) {
    ASSERT_EQ(cache->view().scales[i], 0);
  }
}

}  // namespace
}  // namespace int4kv
