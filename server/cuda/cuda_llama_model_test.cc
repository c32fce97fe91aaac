// The CUDA model against the CPU model on stories260K, both over an INT4 cache of the same
// shape with the same slots: a mixed prefill step and several decode steps (teacher-forced
// with the CPU's greedy tokens), eager and through the decode graphs, fp16 and bf16.
#include "server/cuda/cuda_llama_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <tuple>
#include <vector>

#include "common/cuda_check.h"
#include "gtest/gtest.h"
#include "server/cpu_llama_model.h"
#include "server/cuda/cuda_kv_attention.h"
#include "server/cuda/testing/cuda_test_util.h"
#include "server/int4_kv_attention.h"
#include "server/sampler.h"

namespace int4kv {
namespace {

constexpr int32_t kMaxStepTokens = 64;
constexpr int32_t kMaxBatch = 4;

// One model over its own cache.
struct Side {
  std::unique_ptr<KvCache> cache;
  std::unique_ptr<Model> model;
  std::unique_ptr<KvAttention> attention;  // declared after model: destroyed first
};

struct Request {
  int32_t row = 0;
  std::vector<int32_t> slots;  // one per position
  int32_t length = 0;          // tokens in the cache
};

class CudaLlamaModelTest : public ::testing::TestWithParam<std::tuple<DType, bool>> {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
    weights_ = Stories260KWeights();
    EngineConfig config;
    config.max_batch = kMaxBatch;
    config.max_step_tokens = kMaxStepTokens;
    const KvCacheConfig kv = config.Resolve(weights_->config)->KvConfig(weights_->config);

    cpu_.cache = *KvCache::Create(kv, MemoryKind::kHost);
    cpu_.model = *CpuLlamaModel::Create(weights_, kMaxStepTokens, 2);
    cpu_.attention =
        *Int4KvAttention::Create(cpu_.cache.get(), weights_->config.q_heads, kMaxStepTokens, 2);

    CudaModelOptions options;
    options.max_step_tokens = kMaxStepTokens;
    options.max_logit_rows = kMaxBatch;
    options.dtype = dtype();
    absl::StatusOr<std::unique_ptr<CudaLlamaModel>> model =
        CudaLlamaModel::Create(*weights_, options);
    ASSERT_TRUE(model.ok()) << model.status();
    gpu_model_ = model->get();
    gpu_.cache = *KvCache::Create(kv, MemoryKind::kDevice);
    absl::StatusOr<std::unique_ptr<CudaKvAttention>> attention = CudaKvAttention::Create(
        gpu_.cache.get(), weights_->config.q_heads, kMaxStepTokens, dtype(), gpu_model_->stream());
    ASSERT_TRUE(attention.ok()) << attention.status();
    if (graphs()) {
      ASSERT_TRUE(gpu_model_->CaptureDecodeGraphs(**attention).ok());
    }
    gpu_.model = std::move(*model);
    gpu_.attention = std::move(*attention);
  }

  DType dtype() const { return std::get<0>(GetParam()); }
  bool graphs() const { return std::get<1>(GetParam()); }

  // Reserves the same row and slots in both caches.
  Request AddRequest(int32_t max_length) {
    Request r;
    r.row = *cpu_.cache->requests().AllocateRequest();
    EXPECT_EQ(*gpu_.cache->requests().AllocateRequest(), r.row);
    EXPECT_TRUE(cpu_.cache->slots().Allocate(max_length, &r.slots).ok());
    std::vector<int32_t> gpu_slots;
    EXPECT_TRUE(gpu_.cache->slots().Allocate(max_length, &gpu_slots).ok());
    EXPECT_EQ(gpu_slots, r.slots);
    return r;
  }

  // Adds `tokens` at the request's next positions to the batch and to both tables.
  void AddTokens(Request& r, const std::vector<int32_t>& tokens, bool sample, StepBatch* batch) {
    for (const int32_t token : tokens) {
      batch->AddToken(token, r.length, r.slots[r.length], r.row);
      ++r.length;
    }
    const auto added =
        absl::MakeConstSpan(r.slots).subspan(r.length - tokens.size(), tokens.size());
    ASSERT_TRUE(cpu_.cache->requests().Append(r.row, added).ok());
    ASSERT_TRUE(gpu_.cache->requests().Append(r.row, added).ok());
    if (sample) batch->logit_tokens.push_back(batch->num_tokens() - 1);
  }

  // Runs the step on both models; returns the CPU logits and checks the GPU's against them.
  std::vector<float> RunAndCompare(const StepBatch& batch, double tolerance, const char* what) {
    const int32_t vocab = weights_->config.vocab_size;
    const size_t m = batch.logit_tokens.size();
    std::vector<float> cpu_logits(m * vocab), gpu_logits(m * vocab, -1.0f);
    EXPECT_TRUE(cpu_.attention->Plan(batch).ok());
    EXPECT_TRUE(cpu_.model->Forward(batch, *cpu_.attention, cpu_logits.data()).ok());
    EXPECT_TRUE(gpu_.attention->Plan(batch).ok());
    const absl::Status status = gpu_.model->Forward(batch, *gpu_.attention, gpu_logits.data());
    EXPECT_TRUE(status.ok()) << status;
    double max_diff = 0, max_cpu = 0;
    for (size_t i = 0; i < cpu_logits.size(); ++i) {
      max_diff = std::max(max_diff, std::abs(double{gpu_logits[i]} - cpu_logits[i]));
      max_cpu = std::max(max_cpu, std::abs(double{cpu_logits[i]}));
    }
    std::printf("%s: max |gpu - cpu| = %.5f, max |cpu| = %.3f (%s, graphs %d)\n", what, max_diff,
                max_cpu, std::string(DTypeName(dtype())).c_str(), graphs());
    EXPECT_GT(max_cpu, 1.0) << what;
    EXPECT_LE(max_diff, tolerance * max_cpu) << what;

    // The device argmax of the same step equals the host ArgMax of its logits.
    std::vector<int32_t> greedy(m, -1);
    EXPECT_TRUE(gpu_.attention->Plan(batch).ok());
    EXPECT_TRUE(gpu_model_->ForwardGreedy(batch, *gpu_.attention, greedy.data()).ok());
    for (size_t i = 0; i < m; ++i) {
      EXPECT_EQ(greedy[i], ArgMax(absl::MakeConstSpan(gpu_logits.data() + i * vocab, vocab)))
          << what << ", row " << i;
    }
    return cpu_logits;
  }

  std::shared_ptr<const LlamaWeights> weights_;
  Side cpu_, gpu_;
  CudaLlamaModel* gpu_model_ = nullptr;
};

TEST_P(CudaLlamaModelTest, LogitsMatchTheCpuModelOverPrefillAndDecodeSteps) {
  // fp16 keeps 11 significant bits, bf16 8; INT4 codes may round differently near a boundary.
  const double tolerance = dtype() == DType::kFloat16 ? 0.03 : 0.08;
  const int32_t vocab = weights_->config.vocab_size;
  std::mt19937 rng(17);
  std::vector<Request> requests;
  StepBatch batch;
  // Step 1: three prompts (5, 17 and 30 tokens) in one step; the second is cut after 10
  // tokens and does not sample (a chunked prefill).
  for (const int32_t length : {5, 17, 30}) {
    requests.push_back(AddRequest(40));
    std::vector<int32_t> prompt = {1};
    while (static_cast<int32_t>(prompt.size()) < length) prompt.push_back(3 + rng() % 500);
    if (length == 17) prompt.resize(10);
    AddTokens(requests.back(), prompt, /*sample=*/length != 17, &batch);
  }
  std::vector<float> logits = RunAndCompare(batch, tolerance, "prefill");
  // Step 2: the rest of the second prompt beside decode tokens of the other two.
  std::vector<int32_t> next(3);
  next[0] = ArgMax(absl::MakeConstSpan(logits.data(), vocab));
  next[2] = ArgMax(absl::MakeConstSpan(logits.data() + vocab, vocab));
  batch.Clear();
  AddTokens(requests[0], {next[0]}, true, &batch);
  std::vector<int32_t> rest;
  for (int i = 10; i < 17; ++i) rest.push_back(3 + rng() % 500);
  AddTokens(requests[1], rest, true, &batch);
  AddTokens(requests[2], {next[2]}, true, &batch);
  logits = RunAndCompare(batch, tolerance, "mixed");
  // Steps 3..8: decode only (bucket 4 with one padded row), the CPU's greedy tokens fed back.
  for (int step = 0; step < 6; ++step) {
    for (int i = 0; i < 3; ++i)
      next[i] = ArgMax(absl::MakeConstSpan(logits.data() + i * vocab, vocab));
    batch.Clear();
    for (int i = 0; i < 3; ++i) AddTokens(requests[i], {next[i]}, true, &batch);
    logits = RunAndCompare(batch, tolerance, "decode");
  }
  if (graphs()) {
    EXPECT_GE(gpu_model_->graph_replays(), 6);
  }
}

TEST_P(CudaLlamaModelTest, RejectsAHostAttention) {
  Request r = AddRequest(4);
  StepBatch batch;
  AddTokens(r, {1}, true, &batch);
  ASSERT_TRUE(cpu_.attention->Plan(batch).ok());
  std::vector<float> logits(weights_->config.vocab_size);
  const absl::Status status = gpu_.model->Forward(batch, *cpu_.attention, logits.data());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(DtypesAndGraphs, CudaLlamaModelTest,
                         ::testing::Combine(::testing::Values(DType::kFloat16, DType::kBFloat16),
                                            ::testing::Bool()),
                         [](const ::testing::TestParamInfo<std::tuple<DType, bool>>& info) {
                           return std::string(DTypeName(std::get<0>(info.param))) +
                                  (std::get<1>(info.param) ? "_graphs" : "_eager");
                         });

}  // namespace
}  // namespace int4kv
