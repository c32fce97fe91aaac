// The shape of a Llama-architecture model, as the engine, the KV cache and the math layer see
// it, with validation. Plain data; copied freely.
#ifndef INT4KV_SERVER_MODEL_CONFIG_H_
#define INT4KV_SERVER_MODEL_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace int4kv {

// Limits that keep every weight count and activation index inside int64 and every
// per-dimension index inside int32, whatever a checkpoint header says.
constexpr int32_t kMaxModelDim = 65536;
constexpr int32_t kMaxModelHiddenDim = 1 << 20;
constexpr int32_t kMaxModelLayers = 1024;
constexpr int32_t kMaxModelHeads = 1024;
constexpr int32_t kMaxModelVocab = 1 << 22;
constexpr int32_t kMaxModelSeqLen = 1 << 20;

struct ModelConfig {
  int32_t dim = 0;         // residual width; q_heads * head_dim
  int32_t hidden_dim = 0;  // SwiGLU inner width
  int32_t num_layers = 0;
  int32_t q_heads = 0;
  int32_t kv_heads = 0;           // divides q_heads (grouped-query attention)
  int32_t vocab_size = 0;         // logits per token
  int32_t max_seq_len = 0;        // longest context the model was built for
  bool shared_classifier = true;  // the LM head is the token embedding
  float norm_eps = 1e-5f;         // RMSNorm epsilon
  float rope_theta = 10000.0f;    // RoPE base; pairs (2i, 2i + 1) of each head
  int32_t bos_token = 1;
  int32_t eos_token = 2;

  int32_t head_dim() const { return q_heads > 0 ? dim / q_heads : 0; }
  int32_t kv_dim() const { return kv_heads * head_dim(); }  // width of K (and of V) per token

  // OK, or InvalidArgument naming the first bad field and its allowed range.
  absl::Status Validate() const;

  // Number of float weights (embedding, layers, final norm, classifier when not shared).
  // Valid only for a config that passed Validate() (no overflow is possible then).
  int64_t ParameterCount() const;

  std::string DebugString() const;
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_MODEL_CONFIG_H_
