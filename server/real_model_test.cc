// The engine on the real stories260K weights against the independent float32 reference
// (server/testing/reference_llama.h).
#include <algorithm>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "kv_cache/quantize.h"
#include "server/engine.h"
#include "server/model_source.h"
#include "server/testing/reference_llama.h"
#include "server/testing/test_util.h"

namespace int4kv {
namespace {

class RealModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<ReferenceLlama> loaded = ReferenceLlama::Load(kDefaultModelPath);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    reference_ = new ReferenceLlama(std::move(*loaded));
    prompts_ = new std::vector<std::vector<int32_t>>(
        ModelPrompts(*reference_, /*count=*/6, /*min_len=*/1, /*max_len=*/40, /*seed=*/7));
  }
  static void TearDownTestSuite() {
    delete reference_;
    delete prompts_;
  }

  static ReferenceLlama* reference_;
  static std::vector<std::vector<int32_t>>* prompts_;
};

ReferenceLlama* RealModelTest::reference_ = nullptr;
std::vector<std::vector<int32_t>>* RealModelTest::prompts_ = nullptr;

constexpr int kTokens = 120;

// With quantization bypassed, the engine's greedy tokens are the reference's, token for token,
// with every request in one batch (prefill and decode rows mixed).
TEST_F(RealModelTest, FloatKvEngineMatchesReferenceExactly) {
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(SmallConfig(), Stories260K(), kDefaultModelPath, FloatAttentionFactory());
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->GetInfo().attention, "float");
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const std::vector<int32_t>& prompt : *prompts_) {
    absl::StatusOr<std::shared_ptr<RequestStream>> stream =
        (*engine)->Submit(GreedyRequest(prompt, kTokens));
    ASSERT_TRUE(stream.ok()) << stream.status();
    streams.push_back(*stream);
  }
  for (size_t i = 0; i < prompts_->size(); ++i) {
    const GenerationResult result = streams[i]->ReadAll();
    ASSERT_TRUE(result.status.ok()) << result.status;
    EXPECT_EQ(result.finish_reason, FinishReason::kLength);
    EXPECT_EQ(result.tokens, reference_->Greedy((*prompts_)[i], kTokens)) << "prompt " << i;
  }
}

// stories260K ends a story with BOS (token 1), as llama2.c's run.c reads it: a sampled request
// that runs on past its first story (ignore_eos) emits 1 there, and the same request with EOS
// honoured finishes eos on that token, its tokens the same up to it.
TEST_F(RealModelTest, AStoryEndsAtBos) {
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(SmallConfig(), Stories260K(), kDefaultModelPath);
  ASSERT_TRUE(engine.ok()) << engine.status();
  ASSERT_EQ((*engine)->GetInfo().model.eos_token, 1);
  auto run = [&](uint64_t seed, bool ignore_eos) {
    GenerateRequest request;
    request.prompt = {1};
    request.max_new_tokens = 400;
    request.sampling.temperature = 1.0f;
    request.sampling.seed = seed;
    request.ignore_eos = ignore_eos;
    absl::StatusOr<std::shared_ptr<RequestStream>> stream = (*engine)->Submit(request);
    EXPECT_TRUE(stream.ok()) << stream.status();
    return stream.ok() ? (*stream)->ReadAll() : GenerationResult{};
  };
  int stories_ended = 0;
  for (uint64_t seed = 100; seed < 104; ++seed) {
    const GenerationResult free_run = run(seed, /*ignore_eos=*/true);
    ASSERT_TRUE(free_run.status.ok()) << free_run.status;
    const auto end = std::find(free_run.tokens.begin(), free_run.tokens.end(), 1);
    if (end == free_run.tokens.end()) continue;
    ++stories_ended;
    const GenerationResult stopped = run(seed, /*ignore_eos=*/false);
    ASSERT_TRUE(stopped.status.ok()) << stopped.status;
    EXPECT_EQ(stopped.finish_reason, FinishReason::kEos) << "seed " << seed;
    EXPECT_EQ(stopped.tokens, std::vector<int32_t>(free_run.tokens.begin(), end + 1))
        << "seed " << seed;
  }
  // The model ends most of its stories within 400 tokens (10 ends in 9 runs of 500).
  EXPECT_GT(stories_ended, 0);
}

// The reference with every cached K/V row sent through the INT4 round trip of the cache
// (kv_cache/quantize.h: group 8, symmetric, fp16 scales): the engine's INT4 path must match it
// token for token. This pins the INT4 plumbing (slots, req_to_token, StoreKvHost, backend).
TEST_F(RealModelTest, Int4EngineMatchesReferenceWithQuantizedKv) {
  absl::StatusOr<ReferenceLlama> quantized = ReferenceLlama::Load(kDefaultModelPath);
  ASSERT_TRUE(quantized.ok()) << quantized.status();
  quantized->set_kv_round_trip([](float* row, int head_dim) {
    std::vector<uint8_t> bytes(head_dim / 2);
    std::vector<uint16_t> scales(head_dim / 8);
    QuantizeRow([&](int i) { return row[i]; }, head_dim, 8, ParamDtype::kFloat16,
                QuantMode::kSymmetric, QuantRounding::kNearestEven, bytes.data(), scales.data(),
                nullptr);
    for (int i = 0; i < head_dim; ++i) {
      row[i] = DequantizeElement(bytes.data(), scales.data(), nullptr, i, 8, ParamDtype::kFloat16,
                                 QuantMode::kSymmetric);
    }
  });
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(SmallConfig(), Stories260K(), kDefaultModelPath);
  ASSERT_TRUE(engine.ok()) << engine.status();
  for (size_t i = 0; i < prompts_->size(); ++i) {
    const GenerationResult result = RunToEnd(**engine, GreedyRequest((*prompts_)[i], kTokens));
    EXPECT_EQ(result.tokens, quantized->Greedy((*prompts_)[i], kTokens)) << "prompt " << i;
  }
}

}  // namespace
}  // namespace int4kv
