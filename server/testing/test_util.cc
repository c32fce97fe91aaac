#include "server/testing/test_util.h"

#include "server/llama2c_checkpoint.h"
#include "server/model_source.h"
#include "server/testing/float_kv_attention.h"

namespace int4kv {

std::shared_ptr<const LlamaWeights> Stories260K() {
  static const std::shared_ptr<const LlamaWeights>* weights =
      new std::shared_ptr<const LlamaWeights>(std::make_shared<const LlamaWeights>(
          ValueOrDie(LoadLlama2cCheckpoint(kDefaultModelPath), kDefaultModelPath)));
  return *weights;
}

KvAttentionFactory FloatAttentionFactory() {
  return [](KvCache* cache, const ModelConfig& model,
            const EngineConfig& config) -> absl::StatusOr<std::unique_ptr<KvAttention>> {
    absl::StatusOr<std::unique_ptr<FloatKvAttention>> attention =
        FloatKvAttention::Create(cache, model.q_heads, config.max_step_tokens);
    if (!attention.ok()) return attention.status();
    return std::unique_ptr<KvAttention>(std::move(*attention));
  };
}

EngineConfig SmallConfig() {
  EngineConfig config;
  config.max_batch = 8;
  config.max_queue = 64;
  config.threads = 2;
  return config;
}

GenerateRequest GreedyRequest(std::vector<int32_t> prompt, int32_t max_new_tokens) {
  GenerateRequest request;
  request.prompt = std::move(prompt);
  request.max_new_tokens = max_new_tokens;
  request.ignore_eos = true;
  return request;
}

GenerationResult RunToEnd(Engine& engine, const GenerateRequest& request) {
  absl::StatusOr<std::shared_ptr<RequestStream>> stream = engine.Submit(request);
  if (!stream.ok()) {
    std::fprintf(stderr, "Submit failed: %s\n", stream.status().ToString().c_str());
    std::abort();
  }
  return (*stream)->ReadAll();
}

}  // namespace int4kv
