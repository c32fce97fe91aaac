#include "server/engine_config.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;

ModelConfig Stories() {
  ModelConfig c;
  c.dim = 64;
  c.hidden_dim = 172;
  c.num_layers = 5;
  c.q_heads = 8;
  c.kv_heads = 4;
  c.vocab_size = 512;
  c.max_seq_len = 512;
  return c;
}

void ExpectInvalid(const EngineConfig& config, const std::string& part) {
  const absl::StatusOr<EngineConfig> resolved = config.Resolve(Stories());
  ASSERT_FALSE(resolved.ok()) << part;
  EXPECT_EQ(resolved.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(resolved.status().message()), HasSubstr(part));
}

TEST(EngineConfigTest, Defaults) {
  const absl::StatusOr<EngineConfig> c = EngineConfig().Resolve(Stories());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->max_seq_len, 512);
  EXPECT_EQ(c->max_new_tokens_limit, 511);
  EXPECT_EQ(c->max_step_tokens, 512);
  EXPECT_EQ(c->kv_capacity_slots, 8 * 512);
  const KvCacheConfig kv = c->KvConfig(Stories());
  EXPECT_TRUE(kv.Validate().ok());
  EXPECT_EQ(kv.max_requests, 8);
  EXPECT_EQ(kv.head_dim, 8);
  EXPECT_EQ(kv.kv_heads, 4);
  EXPECT_EQ(kv.num_layers, 5);
}

TEST(EngineConfigTest, BudgetBecomesSlots) {
  EngineConfig config;
  config.kv_budget_bytes = 1 << 20;
  const absl::StatusOr<EngineConfig> c = config.Resolve(Stories());
  ASSERT_TRUE(c.ok()) << c.status();
  // 5 layers * 4 KV heads * 2 (K, V) * (4 code bytes + 2 scale bytes) = 240 bytes a token.
  EXPECT_EQ(c->KvConfig(Stories()).BytesPerToken(), 240);
  EXPECT_EQ(c->kv_capacity_slots, (1 << 20) / 240 - 1);
  config.kv_budget_bytes = 100;
  ExpectInvalid(config, "holds no token slot");
}

TEST(EngineConfigTest, NamesFieldAndLimit) {
  EngineConfig c;
  c.max_batch = 0;
  ExpectInvalid(c, "EngineConfig.max_batch = 0 is invalid: must be in [1, 4096]");
  c = EngineConfig();
  c.max_queue = -1;
  ExpectInvalid(c, "max_queue = -1");
  c = EngineConfig();
  c.max_seq_len = 513;
  ExpectInvalid(c, "max_seq_len = 513 is invalid: must be in [2, 512] (the model's max_seq_len)");
  c = EngineConfig();
  c.max_new_tokens_limit = 600;
  ExpectInvalid(c, "max_new_tokens_limit = 600");
  c = EngineConfig();
  c.max_step_tokens = 4;
  ExpectInvalid(c, "max_step_tokens = 4 is invalid: must be in [max_batch (8), 65536]");
  c = EngineConfig();
  c.group_size = 16;
  ExpectInvalid(c, "group_size = 16 is invalid: must be a divisor of the model's head_dim (8)");
  c.group_size = 12;
  ExpectInvalid(c, "one of 8, 16, 32, 64, 128");
  c = EngineConfig();
  c.kv_capacity_slots = 100;
  c.kv_budget_bytes = 1000000;
  ExpectInvalid(c, "set at most one");
  c = EngineConfig();
  c.threads = -2;
  ExpectInvalid(c, "threads = -2");
  c = EngineConfig();
  c.device = "tpu";
  ExpectInvalid(c, "device = 'tpu'");
  // The ranges' edges.
  c = EngineConfig();
  c.max_new_tokens_limit = 512;
  ExpectInvalid(c, "max_new_tokens_limit = 512 is invalid: must be in [1, 511]");
  c.max_new_tokens_limit = 511;
  EXPECT_TRUE(c.Resolve(Stories()).ok());
  c = EngineConfig();
  c.max_seq_len = 1;
  ExpectInvalid(c, "max_seq_len = 1 is invalid: must be in [2, 512]");
  c = EngineConfig();
  c.kv_capacity_slots = -1;
  ExpectInvalid(c, "EngineConfig.kv_capacity_slots = -1");
  c = EngineConfig();
  c.max_batch = 4097;
  ExpectInvalid(c, "max_batch = 4097");
  c.max_batch = 4096;
  const absl::StatusOr<EngineConfig> largest = c.Resolve(Stories());
  EXPECT_TRUE(largest.ok()) << largest.status();
}

// A model whose query heads share a KV head more than 16 ways is refused: the decode backend
// takes at most 16.
TEST(EngineConfigTest, AtMostSixteenQueryHeadsPerKvHead) {
  ModelConfig model = Stories();
  model.dim = 256;  // head_dim 8
  model.kv_heads = 1;
  model.q_heads = 32;
  const absl::StatusOr<EngineConfig> refused = EngineConfig().Resolve(model);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("the model has 32 query heads per KV head; the decode-attention backend "
                        "supports at most 16"));
  model.dim = 128;
  model.q_heads = 16;
  EXPECT_TRUE(EngineConfig().Resolve(model).ok());
}

// The default step budget is the model's sequence length up to 512 tokens, and never fewer
// than max_batch.
TEST(EngineConfigTest, DefaultStepTokensAreCapped) {
  ModelConfig model = Stories();
  model.max_seq_len = 2048;
  absl::StatusOr<EngineConfig> c = EngineConfig().Resolve(model);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->max_step_tokens, 512);
  EngineConfig wide;
  wide.max_batch = 1024;
  c = wide.Resolve(model);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->max_step_tokens, 1024);
}

TEST(EngineConfigTest, GpuMemoryFractionIsLeftForTheCudaScheduler) {
  EngineConfig config;
  config.device = "cuda";  // Resolve needs no GPU; Scheduler::Create does
  config.kv_gpu_memory_fraction = 0.9;
  const absl::StatusOr<EngineConfig> c = config.Resolve(Stories());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kv_gpu_memory_fraction, 0.9);
  EXPECT_EQ(c->kv_capacity_slots, 0);  // measured and set at creation
  EXPECT_EQ(c->kv_budget_bytes, 0);
  config.kv_gpu_memory_fraction = 1.0;
  EXPECT_TRUE(config.Resolve(Stories()).ok());
}

TEST(EngineConfigTest, GpuMemoryFractionOutsideItsRangeNamesTheRange) {
  EngineConfig config;
  config.device = "cuda";
  for (const double fraction : {-0.5, 1.01, 2.0, std::nan("")}) {
    config.kv_gpu_memory_fraction = fraction;
    ExpectInvalid(config, "EngineConfig.kv_gpu_memory_fraction = ");
    ExpectInvalid(config, "is invalid: must be in (0, 1], or 0 for unused");
  }
}

TEST(EngineConfigTest, GpuMemoryFractionNeedsDeviceCuda) {
  EngineConfig config;  // device cpu
  config.kv_gpu_memory_fraction = 0.5;
  ExpectInvalid(config, "kv_gpu_memory_fraction needs device cuda, but the device is cpu");
  ExpectInvalid(config, "kv_budget_bytes or kv_capacity_slots instead");
}

TEST(EngineConfigTest, GpuMemoryFractionExcludesSlotsAndBudget) {
  EngineConfig config;
  config.device = "cuda";
  config.kv_gpu_memory_fraction = 0.5;
  config.kv_capacity_slots = 100;
  ExpectInvalid(config, "kv_gpu_memory_fraction and kv_capacity_slots are both set");
  config.kv_capacity_slots = 0;
  config.kv_budget_bytes = 1 << 20;
  ExpectInvalid(config, "kv_gpu_memory_fraction and kv_budget_bytes are both set");
}

TEST(EngineConfigTest, GpuMemoryFractionStillChecksTheCacheLayout) {
  EngineConfig config;
  config.device = "cuda";
  config.kv_gpu_memory_fraction = 0.5;
  config.group_size = 16;
  ExpectInvalid(config, "group_size = 16");
}

}  // namespace
}  // namespace int4kv
