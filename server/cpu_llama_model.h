// The Llama forward pass on the CPU in float32: token embedding, per layer RMSNorm -> q/k/v
// projections -> RoPE -> attention through KvAttention -> output projection -> residual,
// RMSNorm -> SwiGLU MLP -> residual; then the final norm and the LM head.
#ifndef INT4KV_SERVER_CPU_LLAMA_MODEL_H_
#define INT4KV_SERVER_CPU_LLAMA_MODEL_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/thread_pool.h"
#include "server/llama_weights.h"
#include "server/model.h"

namespace int4kv {

class CpuLlamaModel : public Model {
 public:
  // weights: shared, read-only (several models may use one copy). max_step_tokens >= 1 sizes
  // the activation buffers. threads: 0 means one per hardware thread.
  static absl::StatusOr<std::unique_ptr<CpuLlamaModel>> Create(
      std::shared_ptr<const LlamaWeights> weights, int32_t max_step_tokens, int threads);

  absl::string_view name() const override { return "cpu"; }
  const ModelConfig& config() const override { return weights_->config; }
  int32_t max_step_tokens() const override { return max_step_tokens_; }
  absl::Status Forward(const StepBatch& batch, KvAttention& attention, float* logits) override;

 private:
  CpuLlamaModel(std::shared_ptr<const LlamaWeights> weights, int32_t max_step_tokens, int threads);

  std::shared_ptr<const LlamaWeights> weights_;
  int32_t max_step_tokens_;
  ThreadPool pool_;
  // Activations, sized for max_step_tokens at creation (n = tokens in the step).
  std::vector<float> x_;      // [n][dim] residual stream
  std::vector<float> xb_;     // [n][dim] normed input of a sub-block
  std::vector<float> q_;      // [n][q_heads][head_dim]
  std::vector<float> k_;      // [n][kv_heads][head_dim]
  std::vector<float> v_;      // [n][kv_heads][head_dim]
  std::vector<float> attn_;   // [n][q_heads][head_dim]
  std::vector<float> proj_;   // [n][dim] output of wo / w2
  std::vector<float> gate_;   // [n][hidden_dim]
  std::vector<float> up_;     // [n][hidden_dim]
  std::vector<float> final_;  // [logit tokens][dim]
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_CPU_LLAMA_MODEL_H_
