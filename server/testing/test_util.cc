#include "server/testing/test_util.h"

#include "server/int4_kv_attention.h"
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

namespace {

class FailingAttention : public KvAttention {
 public:
  FailingAttention(std::unique_ptr<KvAttention> inner, std::function<bool()> fail_now)
      : inner_(std::move(inner)), fail_now_(std::move(fail_now)) {}
  absl::string_view name() const override { return "failing"; }
  absl::Status Plan(const StepBatch& batch) override { return inner_->Plan(batch); }
  absl::Status Attend(int32_t layer, const void* q, const void* k, const void* v,
                      void* out) override {
    if (fail_now_()) return absl::InvalidArgumentError("injected attention failure");
    return inner_->Attend(layer, q, k, v, out);
  }

 private:
  std::unique_ptr<KvAttention> inner_;
  std::function<bool()> fail_now_;
};

}  // namespace

KvAttentionFactory FailingInt4AttentionFactory(std::function<bool()> fail_now) {
  return [fail_now](KvCache* cache, const ModelConfig& model,
                    const EngineConfig& config) -> absl::StatusOr<std::unique_ptr<KvAttention>> {
    absl::StatusOr<std::unique_ptr<Int4KvAttention>> inner =
        Int4KvAttention::Create(cache, model.q_heads, config.max_step_tokens, 1);
    if (!inner.ok()) return inner.status();
    return std::unique_ptr<KvAttention>(new FailingAttention(std::move(*inner), fail_now));
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
