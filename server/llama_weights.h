// Host float32 weights of a Llama-architecture model, in the llama2.c orientation: every
// projection matrix is row-major [out_features][in_features], so y = W x reads one row of W
// per output. A GPU model converts these (to fp16/bf16 on the device) once at start-up.
//
// Ownership: LlamaWeights owns its tensors; models keep it alive (or copy what they need).
#ifndef INT4KV_SERVER_LLAMA_WEIGHTS_H_
#define INT4KV_SERVER_LLAMA_WEIGHTS_H_

#include <vector>

#include "absl/status/status.h"
#include "server/model_config.h"

namespace int4kv {

struct LlamaLayerWeights {
  std::vector<float> attention_norm;  // [dim]
  std::vector<float> wq;              // [q_heads * head_dim][dim]
  std::vector<float> wk;              // [kv_heads * head_dim][dim]
  std::vector<float> wv;              // [kv_heads * head_dim][dim]
  std::vector<float> wo;              // [dim][q_heads * head_dim]
  std::vector<float> ffn_norm;        // [dim]
  std::vector<float> w1;              // [hidden_dim][dim]  gate
  std::vector<float> w2;              // [dim][hidden_dim]  down
  std::vector<float> w3;              // [hidden_dim][dim]  up
};

struct LlamaWeights {
  ModelConfig config;
  std::vector<float> token_embedding;     // [vocab_size][dim]
  std::vector<LlamaLayerWeights> layers;  // [num_layers]
  std::vector<float> final_norm;          // [dim]
  std::vector<float> classifier;          // [vocab_size][dim]; empty when config.shared_classifier

  // The LM head: the classifier, or the token embedding when shared.
  const std::vector<float>& lm_head() const {
    return config.shared_classifier ? token_embedding : classifier;
  }

  // Sizes every tensor for `config` (zero-filled). `config` must be valid.
  void Allocate(const ModelConfig& config);

  // OK when the config is valid and every tensor has the size the config implies; otherwise
  // InvalidArgument naming the tensor, its size and the expected size.
  absl::Status Validate() const;
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_LLAMA_WEIGHTS_H_
