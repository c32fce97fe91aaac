#include "server/cuda/testing/cuda_test_util.h"

#include <deque>
#include <random>

#include "gtest/gtest.h"
#include "kv_cache/kv_cache.h"
#include "server/cuda/cuda_kv_attention.h"
#include "server/cuda/cuda_llama_model.h"
#include "server/llama2c_checkpoint.h"
#include "server/model_source.h"
#include "server/scheduler.h"

namespace int4kv {

EngineConfig CudaConfig() {
  EngineConfig config;
  config.device = "cuda";
  config.max_batch = 8;
  config.max_queue = 64;
  config.threads = 2;
  return config;
}

std::vector<GenerateRequest> MixedRequests(int count, uint64_t seed, int sampled_every) {
  std::mt19937_64 rng(seed);
  std::vector<GenerateRequest> requests;
  for (int i = 0; i < count; ++i) {
    GenerateRequest request;
    request.prompt = {1};
    const int length = static_cast<int>(rng() % 70);
    for (int t = 0; t < length; ++t)
      request.prompt.push_back(static_cast<int32_t>(3 + rng() % 509));
    request.max_new_tokens = 4 + static_cast<int32_t>(rng() % 60);
    request.ignore_eos = true;
    if (sampled_every > 0 && i % sampled_every == sampled_every - 1) {
      request.sampling.temperature = 0.8f;
      request.sampling.top_k = 40;
    }
    request.sampling.seed = 1000 + i;
    requests.push_back(std::move(request));
  }
  return requests;
}

SchedulerRun RunScheduler(const EngineConfig& config,
                          const std::vector<GenerateRequest>& requests) {
  const std::shared_ptr<const LlamaWeights> weights = Stories260K();
  const EngineConfig resolved =
      ValueOrDie(config.Resolve(weights->config), "EngineConfig::Resolve");
  std::unique_ptr<Scheduler> scheduler =
      ValueOrDie(Scheduler::Create(resolved, weights), "Scheduler::Create");
  std::deque<PendingRequest> queue;
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (size_t i = 0; i < requests.size(); ++i) {
    PendingRequest pending;
    pending.id = i + 1;
    pending.request = requests[i];
    pending.seed = *requests[i].sampling.seed;
    pending.stream = std::make_shared<RequestStream>(pending.id);
    pending.submit_time = absl::Now();
    streams.push_back(pending.stream);
    queue.push_back(std::move(pending));
  }
  SchedulerRun run;
  while (!queue.empty() || !scheduler->idle()) {
    while (!queue.empty() && scheduler->CanAdmit(queue.front())) {
      scheduler->Admit(std::move(queue.front()));
      queue.pop_front();
    }
    scheduler->Step();
    ++run.steps;
  }
  for (size_t i = 0; i < streams.size(); ++i) {
    const GenerationResult result = streams[i]->ReadAll();
    EXPECT_EQ(result.finish_reason, FinishReason::kLength)
        << "request " << i << ": " << result.status;
    run.tokens.push_back(result.tokens);
  }
  if (const auto* cuda = dynamic_cast<const CudaLlamaModel*>(&scheduler->model())) {
    run.graph_replays = cuda->graph_replays();
  }
  return run;
}

std::vector<float> NextTokenLogits(const std::vector<int32_t>& tokens) {
  const std::shared_ptr<const LlamaWeights> weights = Stories260K();
  const ModelConfig& model_config = weights->config;
  EngineConfig config = CudaConfig();
  config.max_batch = 1;
  config.max_step_tokens = static_cast<int32_t>(tokens.size());
  const EngineConfig resolved = ValueOrDie(config.Resolve(model_config), "EngineConfig::Resolve");
  std::unique_ptr<KvCache> cache = ValueOrDie(
      KvCache::Create(resolved.KvConfig(model_config), MemoryKind::kDevice), "KvCache::Create");
  CudaModelOptions options;
  options.max_step_tokens = resolved.max_step_tokens;
  options.max_logit_rows = 1;
  std::unique_ptr<CudaLlamaModel> model =
      ValueOrDie(CudaLlamaModel::Create(*weights, options), "CudaLlamaModel::Create");
  std::unique_ptr<CudaKvAttention> attention =
      ValueOrDie(CudaKvAttention::Create(cache.get(), model_config.q_heads,
                                         resolved.max_step_tokens, options.dtype, model->stream()),
                 "CudaKvAttention::Create");
  const int32_t request = ValueOrDie(cache->requests().AllocateRequest(), "AllocateRequest");
  std::vector<int32_t> slots;
  CheckOk(cache->AppendNewSlots(request, static_cast<int64_t>(tokens.size()), &slots),
          "AppendNewSlots");
  StepBatch batch;
  for (size_t i = 0; i < tokens.size(); ++i) {
    batch.AddToken(tokens[i], static_cast<int32_t>(i), slots[i], request);
  }
  batch.logit_tokens.push_back(batch.num_tokens() - 1);
  std::vector<float> logits(model_config.vocab_size);
  CheckOk(attention->Plan(batch), "CudaKvAttention::Plan");
  CheckOk(model->Forward(batch, *attention, logits.data()), "CudaLlamaModel::Forward");
  attention.reset();  // before the model whose stream it uses
  return logits;
}

}  // namespace int4kv
