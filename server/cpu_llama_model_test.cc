#include "server/cpu_llama_model.h"

#include <cmath>
#include <cstdio>
#include <memory>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kv_cache/kv_cache.h"
#include "server/int4_kv_attention.h"
#include "server/model_source.h"
#include "server/random_weights.h"
#include "server/testing/float_kv_attention.h"
#include "server/testing/reference_llama.h"
#include "server/testing/test_util.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;

// A host KV cache for a model plus helpers that lay sequences into it.
class Harness {
 public:
  Harness(const ModelConfig& model, int32_t max_requests, int32_t max_seq_len) {
    KvCacheConfig config;
    config.num_layers = model.num_layers;
    config.kv_heads = model.kv_heads;
    config.head_dim = model.head_dim();
    config.group_size = 8;
    config.capacity_slots = int64_t{max_requests} * max_seq_len;
    config.max_requests = max_requests;
    config.max_seq_len = max_seq_len;
    cache_ = *KvCache::Create(config, MemoryKind::kHost);
  }

  // Adds `tokens` of a new sequence (positions 0..n-1) to `batch`, every one a logit token.
  void AddSequence(const std::vector<int32_t>& tokens, StepBatch* batch) {
    const int32_t row = *cache_->requests().AllocateRequest();
    std::vector<int32_t> slots;
    ASSERT_TRUE(cache_->slots().Allocate(tokens.size(), &slots).ok());
    ASSERT_TRUE(cache_->requests().Append(row, slots).ok());
    for (size_t p = 0; p < tokens.size(); ++p) {
      batch->AddToken(tokens[p], static_cast<int32_t>(p), slots[p], row);
      batch->logit_tokens.push_back(batch->num_tokens() - 1);
    }
  }

  KvCache* cache() { return cache_.get(); }

 private:
  std::unique_ptr<KvCache> cache_;
};

std::vector<float> RunForward(Model& model, KvAttention& attention, const StepBatch& batch) {
  std::vector<float> logits(batch.logit_tokens.size() * model.config().vocab_size);
  EXPECT_TRUE(attention.Plan(batch).ok());
  const absl::Status status = model.Forward(batch, attention, logits.data());
  EXPECT_TRUE(status.ok()) << status;
  return logits;
}

// A whole prompt in one Forward (every position a query row over its own prefix) gives the
// reference's logits at every position.
TEST(CpuLlamaModelTest, PrefillLogitsMatchReference) {
  std::unique_ptr<CpuLlamaModel> model = *CpuLlamaModel::Create(Stories260K(), 64, 2);
  Harness harness(model->config(), 1, 64);
  std::unique_ptr<FloatKvAttention> attention =
      *FloatKvAttention::Create(harness.cache(), model->config().q_heads, 64);
  const std::vector<int32_t> prompt = {1, 403, 261, 378, 5, 30, 271, 431, 9, 2, 77};
  StepBatch batch;
  harness.AddSequence(prompt, &batch);
  const std::vector<float> logits = RunForward(*model, *attention, batch);

  ReferenceLlama reference = *ReferenceLlama::Load(kDefaultModelPath);
  reference.Reset();
  const int vocab = model->config().vocab_size;
  for (size_t p = 0; p < prompt.size(); ++p) {
    const std::vector<float>& expected = reference.Step(prompt[p]);
    for (int v = 0; v < vocab; ++v) {
      ASSERT_NEAR(logits[p * vocab + v], expected[v], 1e-4) << "position " << p << " token " << v;
    }
  }
}

// Logits of a sequence do not depend on what else is in the Forward, bit for bit, for both
// KV paths.
TEST(CpuLlamaModelTest, SequencesInOneForwardAreIndependent) {
  std::unique_ptr<CpuLlamaModel> model = *CpuLlamaModel::Create(Stories260K(), 64, 2);
  const std::vector<int32_t> a = {1, 50, 60, 70}, b = {1, 300, 2, 9, 11, 400, 17};
  for (bool int4 : {false, true}) {
    auto make_attention = [&](Harness& h) -> std::unique_ptr<KvAttention> {
      if (int4) return *Int4KvAttention::Create(h.cache(), model->config().q_heads, 64, 2);
      return *FloatKvAttention::Create(h.cache(), model->config().q_heads, 64);
    };
    Harness together(model->config(), 2, 64), alone(model->config(), 1, 64);
    std::unique_ptr<KvAttention> attention_together = make_attention(together);
    std::unique_ptr<KvAttention> attention_alone = make_attention(alone);
    StepBatch both, just_b;
    together.AddSequence(a, &both);
    together.AddSequence(b, &both);
    alone.AddSequence(b, &just_b);
    const std::vector<float> logits_both = RunForward(*model, *attention_together, both);
    const std::vector<float> logits_b = RunForward(*model, *attention_alone, just_b);
    const size_t offset = a.size() * model->config().vocab_size;
    ASSERT_EQ(logits_both.size(), offset + logits_b.size());
    for (size_t i = 0; i < logits_b.size(); ++i) {
      ASSERT_EQ(logits_both[offset + i], logits_b[i]) << (int4 ? "int4 " : "float ") << i;
    }
  }
}

// The random "tiny" preset (the model is checked against the reference on stories260K): its
// INT4 logits follow the float-cache ones closely, and the last position's logits depend on
// the earlier tokens, so attention over the cache is in them.
TEST(CpuLlamaModelTest, RandomPresetAttendsOverItsCache) {
  auto weights = std::make_shared<const LlamaWeights>(*RandomWeights(*PresetConfig("tiny"), 1));
  std::unique_ptr<CpuLlamaModel> model = *CpuLlamaModel::Create(weights, 16, 2);
  const int32_t vocab = model->config().vocab_size;
  // Logits of the last position of `tokens`, with an INT4 or a float cache.
  const auto last_logits = [&](const std::vector<int32_t>& tokens, bool int4) {
    Harness harness(model->config(), 1, 16);
    std::unique_ptr<KvAttention> attention;
    if (int4) {
      attention = *Int4KvAttention::Create(harness.cache(), model->config().q_heads, 16, 2);
    } else {
      attention = *FloatKvAttention::Create(harness.cache(), model->config().q_heads, 16);
    }
    StepBatch batch;
    harness.AddSequence(tokens, &batch);
    const std::vector<float> logits = RunForward(*model, *attention, batch);
    return std::vector<float>(logits.end() - vocab, logits.end());
  };
  const std::vector<float> int4 = last_logits({1, 7, 9, 200}, true);
  const std::vector<float> exact = last_logits({1, 7, 9, 200}, false);
  const std::vector<float> other_prefix = last_logits({1, 300, 41, 200}, false);
  double error = 0, norm = 0, moved = 0;
  for (int32_t i = 0; i < vocab; ++i) {
    ASSERT_TRUE(std::isfinite(int4[i])) << i;
    error += (int4[i] - exact[i]) * (int4[i] - exact[i]);
    norm += exact[i] * exact[i];
    moved += (other_prefix[i] - exact[i]) * (other_prefix[i] - exact[i]);
  }
  EXPECT_GT(norm, 0);
  // Group-8 INT4 moves each K/V element by up to half a step of its group's max / 7: several
  // percent of the values, and about as much of the logits; an attention that read wrong rows
  // or none would be off by the order of the logits themselves.
  const double int4_error = std::sqrt(error / norm), prefix_change = std::sqrt(moved / norm);
  EXPECT_LT(int4_error, 0.15) << "INT4 against a float cache";
  EXPECT_GT(prefix_change, 3 * int4_error)
      << "the earlier tokens barely change the last position's logits";
  std::printf("tiny preset, last position: INT4 error %.4f, another prefix moves %.4f\n",
              int4_error, prefix_change);
}

// The model's rope_theta reaches the rotation (llama8b's is 500000, stories' 10000): the same
// weights under two thetas give other logits once positions differ.
TEST(CpuLlamaModelTest, RopeThetaComesFromTheModel) {
  const auto last_logits = [](float theta) {
    LlamaWeights weights = *RandomWeights(*PresetConfig("tiny"), 1);
    weights.config.rope_theta = theta;
    auto shared = std::make_shared<const LlamaWeights>(std::move(weights));
    std::unique_ptr<CpuLlamaModel> model = *CpuLlamaModel::Create(shared, 16, 1);
    Harness harness(model->config(), 1, 16);
    std::unique_ptr<FloatKvAttention> attention =
        *FloatKvAttention::Create(harness.cache(), model->config().q_heads, 16);
    StepBatch batch;
    harness.AddSequence({1, 7, 9, 200, 31, 5}, &batch);
    const std::vector<float> logits = RunForward(*model, *attention, batch);
    const int32_t vocab = model->config().vocab_size;
    return std::vector<float>(logits.end() - vocab, logits.end());
  };
  const std::vector<float> low = last_logits(10000.0f), high = last_logits(1e6f);
  double moved = 0, norm = 0;
  for (size_t i = 0; i < low.size(); ++i) {
    moved += (high[i] - low[i]) * (high[i] - low[i]);
    norm += low[i] * low[i];
  }
  EXPECT_GT(std::sqrt(moved / norm), 1e-3);
}

TEST(CpuLlamaModelTest, RejectsBadBatches) {
  std::unique_ptr<CpuLlamaModel> model = *CpuLlamaModel::Create(Stories260K(), 4, 1);
  Harness harness(model->config(), 1, 16);
  std::unique_ptr<FloatKvAttention> attention =
      *FloatKvAttention::Create(harness.cache(), model->config().q_heads, 16);
  std::vector<float> logits(16 * 512);
  StepBatch batch;
  EXPECT_THAT(std::string(model->Forward(batch, *attention, logits.data()).message()),
              HasSubstr("step of 0 tokens is out of range [1, 4]"));
  harness.AddSequence({1, 2, 3, 4, 5}, &batch);
  EXPECT_THAT(std::string(model->Forward(batch, *attention, logits.data()).message()),
              HasSubstr("step of 5 tokens"));
  StepBatch bad_token = batch;
  bad_token.tokens.resize(3);
  bad_token.positions.resize(3);
  bad_token.slots.resize(3);
  bad_token.rows.resize(3);
  bad_token.logit_tokens = {0, 2};
  bad_token.tokens[1] = 512;
  EXPECT_THAT(std::string(model->Forward(bad_token, *attention, logits.data()).message()),
              HasSubstr("tokens[1] = 512"));
  bad_token.tokens[1] = 3;
  bad_token.logit_tokens = {2, 0};
  EXPECT_THAT(std::string(model->Forward(bad_token, *attention, logits.data()).message()),
              HasSubstr("ascending"));
  EXPECT_EQ(CpuLlamaModel::Create(Stories260K(), 0, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CpuLlamaModel::Create(nullptr, 4, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace int4kv
