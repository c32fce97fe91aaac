#include "server/llama_weights.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace int4kv {
namespace {

absl::Status CheckSize(absl::string_view name, int layer, const std::vector<float>& tensor,
                       int64_t expected) {
  if (static_cast<int64_t>(tensor.size()) == expected) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("weight tensor ", name, layer >= 0 ? absl::StrCat("[", layer, "]") : "", " has ",
                   tensor.size(), " elements; the model config needs ", expected));
}

}  // namespace

void LlamaWeights::Allocate(const ModelConfig& model) {
  config = model;
  const int64_t d = model.dim, h = model.hidden_dim, kv = model.kv_dim();
  token_embedding.assign(int64_t{model.vocab_size} * d, 0.0f);
  layers.resize(model.num_layers);
  for (LlamaLayerWeights& layer : layers) {
    layer.attention_norm.assign(d, 0.0f);
    layer.wq.assign(d * d, 0.0f);
    layer.wk.assign(kv * d, 0.0f);
    layer.wv.assign(kv * d, 0.0f);
    layer.wo.assign(d * d, 0.0f);
    layer.ffn_norm.assign(d, 0.0f);
    layer.w1.assign(h * d, 0.0f);
    layer.w2.assign(d * h, 0.0f);
    layer.w3.assign(h * d, 0.0f);
  }
  final_norm.assign(d, 0.0f);
  if (model.shared_classifier) {
    classifier.clear();
  } else {
    classifier.assign(int64_t{model.vocab_size} * d, 0.0f);
  }
}

absl::Status LlamaWeights::Validate() const {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  const int64_t d = config.dim, h = config.hidden_dim, kv = config.kv_dim();
  const int64_t vocab = config.vocab_size;
  if (absl::Status s = CheckSize("token_embedding", -1, token_embedding, vocab * d); !s.ok()) {
    return s;
  }
  if (static_cast<int64_t>(layers.size()) != config.num_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weights have ", layers.size(), " layers; the model config needs ", config.num_layers));
  }
  for (int i = 0; i < config.num_layers; ++i) {
    const LlamaLayerWeights& layer = layers[i];
    struct Expected {
      absl::string_view name;
      const std::vector<float>* tensor;
      int64_t size;
    };
    const Expected tensors[] = {
        {"attention_norm", &layer.attention_norm, d},
        {"wq", &layer.wq, d * d},
        {"wk", &layer.wk, kv * d},
        {"wv", &layer.wv, kv * d},
        {"wo", &layer.wo, d * d},
        {"ffn_norm", &layer.ffn_norm, d},
        {"w1", &layer.w1, h * d},
        {"w2", &layer.w2, d * h},
        {"w3", &layer.w3, h * d},
    };
    for (const Expected& e : tensors) {
      if (absl::Status s = CheckSize(e.name, i, *e.tensor, e.size); !s.ok()) return s;
    }
  }
  if (absl::Status s = CheckSize("final_norm", -1, final_norm, d); !s.ok()) return s;
  return CheckSize("classifier", -1, classifier, config.shared_classifier ? 0 : vocab * d);
}

}  // namespace int4kv
