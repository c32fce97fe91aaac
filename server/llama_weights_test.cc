#include "server/llama_weights.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/random_weights.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;

TEST(LlamaWeightsTest, AllocateSizesEveryTensor) {
  ModelConfig config = *PresetConfig("tiny", 2);
  config.shared_classifier = false;
  LlamaWeights weights;
  weights.Allocate(config);
  ASSERT_TRUE(weights.Validate().ok()) << weights.Validate();
  EXPECT_EQ(weights.layers[1].wk.size(), static_cast<size_t>(config.kv_dim() * config.dim));
  EXPECT_EQ(weights.layers[0].w2.size(), static_cast<size_t>(config.dim * config.hidden_dim));
  EXPECT_EQ(&weights.lm_head(), &weights.classifier);
}

TEST(LlamaWeightsTest, ValidateNamesTheWrongTensor) {
  LlamaWeights weights;
  weights.Allocate(*PresetConfig("tiny", 2));
  weights.layers[1].wv.pop_back();
  EXPECT_THAT(std::string(weights.Validate().message()),
              HasSubstr("weight tensor wv[1] has 8191 elements; the model config needs 8192"));
  weights.Allocate(*PresetConfig("tiny", 2));
  weights.classifier.resize(3);
  EXPECT_THAT(std::string(weights.Validate().message()), HasSubstr("classifier has 3 elements"));
  weights.Allocate(*PresetConfig("tiny", 2));
  weights.final_norm.pop_back();
  EXPECT_THAT(std::string(weights.Validate().message()), HasSubstr("final_norm has "));
  weights.Allocate(*PresetConfig("tiny", 2));
  weights.layers.pop_back();
  EXPECT_THAT(std::string(weights.Validate().message()), HasSubstr("weights have 1 layers"));
}

}  // namespace
}  // namespace int4kv
