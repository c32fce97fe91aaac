#include "kv_cache/kv_cache_config.h"

#include <functional>
#include <limits>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;

KvCacheConfig ValidConfig() {
  KvCacheConfig config;
  config.num_layers = 2;
  config.kv_heads = 8;
  config.head_dim = 128;
  config.group_size = 8;
  config.capacity_slots = 1000;
  config.max_requests = 16;
  config.max_seq_len = 4096;
  return config;
}

TEST(KvCacheConfigTest, ValidConfigPasses) { EXPECT_TRUE(ValidConfig().Validate().ok()); }

struct BadField {
  std::string field;
  std::function<void(KvCacheConfig&)> spoil;
};

TEST(KvCacheConfigTest, EachBadFieldIsNamed) {
  const BadField cases[] = {
      {"num_layers", [](KvCacheConfig& c) { c.num_layers = 0; }},
      {"num_layers", [](KvCacheConfig& c) { c.num_layers = kMaxLayers + 1; }},
      {"kv_heads", [](KvCacheConfig& c) { c.kv_heads = 0; }},
      {"kv_heads", [](KvCacheConfig& c) { c.kv_heads = -3; }},
      {"head_dim", [](KvCacheConfig& c) { c.head_dim = 127; }},
      {"head_dim", [](KvCacheConfig& c) { c.head_dim = 264; }},
      {"head_dim", [](KvCacheConfig& c) { c.head_dim = 0; }},
      {"head_dim", [](KvCacheConfig& c) { c.head_dim = 72, c.group_size = 16; }},
      {"group_size", [](KvCacheConfig& c) { c.group_size = 4; }},
      {"group_size", [](KvCacheConfig& c) { c.group_size = 24; }},
      {"group_size", [](KvCacheConfig& c) { c.group_size = 256; }},
      {"param_dtype", [](KvCacheConfig& c) { c.param_dtype = static_cast<ParamDtype>(7); }},
      {"quant_mode", [](KvCacheConfig& c) { c.quant_mode = static_cast<QuantMode>(-1); }},
      {"capacity_slots", [](KvCacheConfig& c) { c.capacity_slots = 0; }},
      {"capacity_slots", [](KvCacheConfig& c) { c.capacity_slots = kMaxCapacitySlots + 1; }},
      {"max_requests", [](KvCacheConfig& c) { c.max_requests = 0; }},
      {"max_seq_len", [](KvCacheConfig& c) { c.max_seq_len = 0; }},
      {"max_seq_len", [](KvCacheConfig& c) { c.max_requests = 1 << 20, c.max_seq_len = 1 << 20; }},
  };
  for (const BadField& bad : cases) {
    KvCacheConfig config = ValidConfig();
    bad.spoil(config);
    const absl::Status status = config.Validate();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad.field;
    EXPECT_THAT(std::string(status.message()), HasSubstr("KvCacheConfig." + bad.field))
        << status.message();
    EXPECT_THAT(std::string(status.message()), HasSubstr("must be")) << status.message();
  }
}

TEST(KvCacheConfigTest, BytesPerTokenMatchesLayout) {
  KvCacheConfig config = ValidConfig();
  // Per layer: 16 rows * 64 bytes of codes + 16 rows * 16 groups * 2 bytes of scales.
  EXPECT_EQ(config.DataBytesPerTokenPerLayer(), 1024);
  EXPECT_EQ(config.ParamBytesPerTokenPerLayer(), 512);
  EXPECT_EQ(config.BytesPerToken(), 2 * 1536);
  config.quant_mode = QuantMode::kAsymmetric;
  EXPECT_EQ(config.ParamBytesPerTokenPerLayer(), 1024);
  config.group_size = 128;
  EXPECT_EQ(config.ParamBytesPerTokenPerLayer(), 64);
  EXPECT_EQ(config.PoolBytes(), config.BytesPerToken() * 1001);

  const KvLayout layout = ValidConfig().Layout();
  EXPECT_EQ(layout.num_slots, 1001);
  EXPECT_EQ(layout.DataPoolBytes(), 2 * 1001 * 1024);
  EXPECT_EQ(layout.DataOffset(1, 3, 9), ((1 * 1001 + 3) * 16 + 9) * 64);
  EXPECT_EQ(layout.ParamOffset(1, 3, 9), ((1 * 1001 + 3) * 16 + 9) * 16);

  // A view over that layout counts the same bytes per token and layer as the config.
  for (QuantMode mode : {QuantMode::kSymmetric, QuantMode::kAsymmetric}) {
    KvCacheConfig with_mode = ValidConfig();
    with_mode.quant_mode = mode;
    KvCacheView view;
    view.layout = with_mode.Layout();
    view.quant_mode = mode;
    EXPECT_EQ(view.BytesPerSlotPerLayer(),
              with_mode.DataBytesPerTokenPerLayer() + with_mode.ParamBytesPerTokenPerLayer());
  }
}

TEST(KvCacheConfigTest, CapacityForBudget) {
  const KvCacheConfig config = ValidConfig();
  const int64_t per_token = config.BytesPerToken();
  absl::StatusOr<int64_t> capacity = CapacityForBudget(config, per_token * 101 + 5);
  ASSERT_TRUE(capacity.ok()) << capacity.status();
  EXPECT_EQ(*capacity, 100);  // one row of the budget is the reserved slot 0
  KvCacheConfig sized = config;
  sized.capacity_slots = *capacity;
  EXPECT_LE(sized.PoolBytes(), per_token * 101 + 5);

  const absl::StatusOr<int64_t> too_small = CapacityForBudget(config, per_token);
  EXPECT_EQ(too_small.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(too_small.status().message()), HasSubstr("budget"));

  KvCacheConfig bad = config;
  bad.head_dim = 3;
  EXPECT_THAT(std::string(CapacityForBudget(bad, 1 << 30).status().message()),
              HasSubstr("head_dim"));
}

// The ranges' upper ends are valid values, and a budget past the largest cache sizes the
// largest one.
TEST(KvCacheConfigTest, RangeEndsAreValid) {
  KvCacheConfig config = ValidConfig();
  config.num_layers = kMaxLayers;
  EXPECT_TRUE(config.Validate().ok()) << config.Validate();
  config = ValidConfig();
  config.capacity_slots = kMaxCapacitySlots;
  EXPECT_TRUE(config.Validate().ok()) << config.Validate();
  const absl::StatusOr<int64_t> largest =
      CapacityForBudget(ValidConfig(), std::numeric_limits<int64_t>::max() / 4);
  ASSERT_TRUE(largest.ok()) << largest.status();
  EXPECT_EQ(*largest, kMaxCapacitySlots);
}

// A hand-made view's slot count includes the reserved slot 0: kMaxCapacitySlots + 1 is the
// largest. ValidateCacheView reads no pool, so placeholder pointers serve.
TEST(KvCacheConfigTest, CacheViewSlotsUpToTheLargestCacheAndItsReservedSlot) {
  uint8_t data = 0;
  uint16_t scales = 0;
  KvCacheView view;
  view.layout.num_layers = 1;
  view.layout.kv_heads = 1;
  view.layout.head_dim = 8;
  view.layout.group_size = 8;
  view.data = &data;
  view.scales = &scales;
  view.layout.num_slots = kMaxCapacitySlots + 1;
  EXPECT_TRUE(ValidateCacheView(view).ok()) << ValidateCacheView(view);
  view.layout.num_slots = kMaxCapacitySlots + 2;
  const absl::Status past = ValidateCacheView(view);
  EXPECT_EQ(past.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(past.message()), HasSubstr("KvCacheView.layout.num_slots = 2147483648"));
}

TEST(KvCacheConfigTest, DebugStringPrintsBytesPerTokenOnlyWhenValid) {
  const KvCacheConfig valid = ValidConfig();
  EXPECT_THAT(valid.DebugString(), HasSubstr("group_size=8"));
  EXPECT_THAT(valid.DebugString(), HasSubstr("bytes_per_token=3072"));
  // Each of these would divide by zero (or overflow) in BytesPerToken.
  const std::function<void(KvCacheConfig&)> spoils[] = {
      [](KvCacheConfig& c) { c.group_size = 0; },
      [](KvCacheConfig& c) { c.head_dim = 0, c.group_size = 0; },
      [](KvCacheConfig& c) { c.num_layers = -1; },
      [](KvCacheConfig& c) { c.capacity_slots = 0; },
  };
  for (const auto& spoil : spoils) {
    KvCacheConfig config = ValidConfig();
    spoil(config);
    ASSERT_FALSE(config.Validate().ok());
    const std::string text = config.DebugString();
    EXPECT_THAT(text, HasSubstr("bytes_per_token=invalid")) << text;
    EXPECT_THAT(text, HasSubstr("max_seq_len=4096")) << text;  // the fields are all still there
  }
}

// Values cast from outside the enums print as invalid, not as the other member.
TEST(KvCacheConfigTest, DebugStringNamesEnumValuesOutsideTheEnums) {
  KvCacheConfig config = ValidConfig();
  config.param_dtype = static_cast<ParamDtype>(7);
  config.quant_mode = static_cast<QuantMode>(-1);
  ASSERT_FALSE(config.Validate().ok());
  const std::string text = config.DebugString();
  EXPECT_THAT(text, HasSubstr("params=invalid")) << text;
  EXPECT_THAT(text, HasSubstr("mode=invalid")) << text;
  EXPECT_EQ(ParamDtypeName(ParamDtype::kBFloat16), "bf16");
  EXPECT_EQ(QuantModeName(QuantMode::kAsymmetric), "asymmetric");
}

TEST(KvCacheConfigTest, ParseNames) {
  EXPECT_EQ(*ParseParamDtype("bf16"), ParamDtype::kBFloat16);
  EXPECT_EQ(*ParseQuantMode("asymmetric"), QuantMode::kAsymmetric);
  EXPECT_FALSE(ParseParamDtype("fp8").ok());
  EXPECT_FALSE(ParseQuantMode("sym").ok());
}

}  // namespace
}  // namespace int4kv
