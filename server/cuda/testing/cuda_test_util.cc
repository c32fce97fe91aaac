#include "server/cuda/testing/cuda_test_util.h"

#include <deque>
#include <random>

#include "gtest/gtest.h"
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

}  // namespace int4kv
