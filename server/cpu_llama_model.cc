#include "server/cpu_llama_model.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/cpu_ops.h"

namespace int4kv {

absl::StatusOr<std::unique_ptr<CpuLlamaModel>> CpuLlamaModel::Create(
    std::shared_ptr<const LlamaWeights> weights, int32_t max_step_tokens, int threads) {
  if (weights == nullptr) return absl::InvalidArgumentError("CpuLlamaModel: weights are null");
  RETURN_IF_ERROR(weights->Validate());
  if (max_step_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_step_tokens = ", max_step_tokens, " is invalid: must be >= 1"));
  }
  if (threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("threads = ", threads, " is invalid: must be >= 0 (0: one per core)"));
  }
  return std::unique_ptr<CpuLlamaModel>(
      new CpuLlamaModel(std::move(weights), max_step_tokens, threads));
}

CpuLlamaModel::CpuLlamaModel(std::shared_ptr<const LlamaWeights> weights, int32_t max_step_tokens,
                             int threads)
    : weights_(std::move(weights)), max_step_tokens_(max_step_tokens), pool_(threads) {
  const ModelConfig& c = weights_->config;
  const int64_t n = max_step_tokens;
  x_.resize(n * c.dim);
  xb_.resize(n * c.dim);
  q_.resize(n * c.dim);
  k_.resize(n * c.kv_dim());
  v_.resize(n * c.kv_dim());
  attn_.resize(n * c.dim);
  proj_.resize(n * c.dim);
  gate_.resize(n * c.hidden_dim);
  up_.resize(n * c.hidden_dim);
  final_.resize(n * c.dim);
}

absl::Status CpuLlamaModel::Forward(const StepBatch& batch, KvAttention& attention, float* logits) {
  RETURN_IF_ERROR(ValidateStepBatch(batch, config(), max_step_tokens_, max_step_tokens_));
  const LlamaWeights& w = *weights_;
  const ModelConfig& c = w.config;
  const int64_t n = batch.num_tokens();
  const int64_t dim = c.dim, kv_dim = c.kv_dim(), hidden = c.hidden_dim;

  for (int64_t t = 0; t < n; ++t) {
    std::memcpy(&x_[t * dim], &w.token_embedding[int64_t{batch.tokens[t]} * dim],
                dim * sizeof(float));
  }
  for (int32_t layer = 0; layer < c.num_layers; ++layer) {
    const LlamaLayerWeights& lw = w.layers[layer];
    // Attention block.
    RmsNorm(x_.data(), lw.attention_norm.data(), n, dim, c.norm_eps, xb_.data());
    MatMul(pool_, xb_.data(), n, lw.wq.data(), dim, dim, q_.data());
    MatMul(pool_, xb_.data(), n, lw.wk.data(), kv_dim, dim, k_.data());
    MatMul(pool_, xb_.data(), n, lw.wv.data(), kv_dim, dim, v_.data());
    ApplyRope(q_.data(), batch.positions.data(), n, c.q_heads, c.head_dim(), c.rope_theta);
    ApplyRope(k_.data(), batch.positions.data(), n, c.kv_heads, c.head_dim(), c.rope_theta);
    RETURN_IF_ERROR(attention.Attend(layer, q_.data(), k_.data(), v_.data(), attn_.data()));
    MatMul(pool_, attn_.data(), n, lw.wo.data(), dim, dim, proj_.data());
    AddInPlace(x_.data(), proj_.data(), n * dim);
    // MLP block: w2(silu(w1 x) * w3 x).
    RmsNorm(x_.data(), lw.ffn_norm.data(), n, dim, c.norm_eps, xb_.data());
    MatMul(pool_, xb_.data(), n, lw.w1.data(), hidden, dim, gate_.data());
    MatMul(pool_, xb_.data(), n, lw.w3.data(), hidden, dim, up_.data());
    SwiGlu(gate_.data(), up_.data(), n * hidden);
    MatMul(pool_, gate_.data(), n, lw.w2.data(), dim, hidden, proj_.data());
    AddInPlace(x_.data(), proj_.data(), n * dim);
  }
  const int64_t m = static_cast<int64_t>(batch.logit_tokens.size());
  for (int64_t i = 0; i < m; ++i) {
    std::memcpy(&final_[i * dim], &x_[int64_t{batch.logit_tokens[i]} * dim], dim * sizeof(float));
  }
  RmsNorm(final_.data(), w.final_norm.data(), m, dim, c.norm_eps, final_.data());
  MatMul(pool_, final_.data(), m, w.lm_head().data(), c.vocab_size, dim, logits);
  return absl::OkStatus();
}

}  // namespace int4kv
