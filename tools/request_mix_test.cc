#include "tools/request_mix.h"

#include <set>

#include "gtest/gtest.h"

namespace int4kv {
namespace {

v1::ModelInfo Model() {
  v1::ModelInfo model;
  model.set_vocab_size(512);
  model.set_bos_token(1);
  return model;
}

TEST(RequestMixTest, LengthsFollowTheDistributionsAndIdsAreInTheVocabulary) {
  LoadgenConfig config;
  config.prompt_len = {2, 9};
  config.output_len = {5, 5};
  RequestMix mix(config, Model());
  std::set<int> prompt_lengths;
  std::set<int32_t> ids;
  for (int i = 0; i < 2000; ++i) {
    const v1::GenerateRequest request = mix.Next();
    prompt_lengths.insert(request.prompt_size());
    EXPECT_EQ(request.prompt(0), 1);  // BOS
    for (int32_t id : request.prompt()) {
      ASSERT_GE(id, 0);
      ASSERT_LT(id, 512);
      ids.insert(id);
    }
    EXPECT_EQ(request.max_new_tokens(), 5);
    EXPECT_TRUE(request.sampling().ignore_eos());
    EXPECT_FALSE(request.sampling().has_seed());  // greedy
    EXPECT_EQ(request.request_id(), "lg-" + std::to_string(i));
  }
  EXPECT_EQ(prompt_lengths, (std::set<int>{2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_GT(ids.size(), 500u);  // ~11000 draws cover the vocabulary, both ends included
  EXPECT_EQ(*ids.begin(), 0);
  EXPECT_EQ(*ids.rbegin(), 511);
}

// --ignore_eos reaches the requests both ways, and a server's BOS outside its vocabulary is
// replaced by token 0 rather than sent.
TEST(RequestMixTest, IgnoreEosAndBosFollowTheConfigAndTheServer) {
  LoadgenConfig config;
  config.ignore_eos = false;
  RequestMix mix(config, Model());
  EXPECT_FALSE(mix.Next().sampling().ignore_eos());
  for (const int32_t bos : {600, -1}) {
    v1::ModelInfo odd = Model();
    odd.set_bos_token(bos);
    RequestMix odd_mix(LoadgenConfig(), odd);
    EXPECT_EQ(odd_mix.Next().prompt(0), 0) << bos;
  }
}

TEST(RequestMixTest, SameSeedSameRequests) {
  LoadgenConfig config;
  config.prompt_len = {1, 50};
  config.output_len = {1, 50};
  config.temperature = 0.7f;
  RequestMix a(config, Model());
  RequestMix b(config, Model());
  for (int i = 0; i < 50; ++i) {
    const v1::GenerateRequest x = a.Next();
    EXPECT_EQ(x.SerializeAsString(), b.Next().SerializeAsString());
    EXPECT_TRUE(x.sampling().has_seed());
    EXPECT_FLOAT_EQ(x.sampling().temperature(), 0.7f);
  }
}

}  // namespace
}  // namespace int4kv
