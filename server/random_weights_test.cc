#include "server/random_weights.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;

TEST(PresetConfigTest, Llama8bShape) {
  const absl::StatusOr<ModelConfig> c = PresetConfig("llama8b", 2);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->dim, 4096);
  EXPECT_EQ(c->q_heads, 32);
  EXPECT_EQ(c->kv_heads, 8);
  EXPECT_EQ(c->head_dim(), 128);
  EXPECT_EQ(c->hidden_dim, 14336);
  EXPECT_EQ(c->vocab_size, 32000);
  EXPECT_EQ(c->num_layers, 2);
  EXPECT_EQ(PresetConfig("llama8b")->num_layers, 32);
}

TEST(PresetConfigTest, Errors) {
  EXPECT_THAT(std::string(PresetConfig("gpt2").status().message()),
              HasSubstr("unknown model preset 'gpt2': must be tiny or llama8b"));
  EXPECT_THAT(std::string(PresetConfig("tiny", -1).status().message()),
              HasSubstr("layer count -1"));
  EXPECT_EQ(PresetConfig("tiny", kMaxModelLayers + 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RandomWeightsTest, DeterministicInSeedAndThreads) {
  const ModelConfig c = *PresetConfig("tiny");
  const absl::StatusOr<LlamaWeights> a = RandomWeights(c, 7, /*threads=*/1);
  const absl::StatusOr<LlamaWeights> b = RandomWeights(c, 7, /*threads=*/2);
  const absl::StatusOr<LlamaWeights> other = RandomWeights(c, 8, /*threads=*/2);
  ASSERT_TRUE(a.ok() && b.ok() && other.ok());
  EXPECT_TRUE(a->Validate().ok());
  EXPECT_EQ(a->token_embedding, b->token_embedding);
  EXPECT_EQ(a->layers[1].w2, b->layers[1].w2);
  EXPECT_NE(a->token_embedding, other->token_embedding);
  EXPECT_NE(a->layers[0].wq, a->layers[1].wq);  // tensors are independent streams
}

TEST(RandomWeightsTest, VarianceIsOneOverFanIn) {
  const ModelConfig c = *PresetConfig("tiny");
  const absl::StatusOr<LlamaWeights> w = RandomWeights(c, 1);
  ASSERT_TRUE(w.ok());
  auto variance = [](const std::vector<float>& v) {
    double sum = 0, square = 0;
    for (float x : v) {
      sum += x;
      square += double{x} * x;
    }
    const double mean = sum / v.size();
    return square / v.size() - mean * mean;
  };
  EXPECT_NEAR(variance(w->layers[0].wq) * c.dim, 1.0, 0.05);
  EXPECT_NEAR(variance(w->layers[0].w2) * c.hidden_dim, 1.0, 0.05);
  EXPECT_EQ(w->layers[0].attention_norm, std::vector<float>(c.dim, 1.0f));
}

}  // namespace
}  // namespace int4kv
