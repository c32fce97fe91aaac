#include "server/model_config.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace int4kv {
namespace {

absl::Status Invalid(absl::string_view field, int64_t value, absl::string_view allowed) {
  return absl::InvalidArgumentError(
      absl::StrCat("ModelConfig.", field, " = ", value, " is invalid: must be ", allowed));
}

absl::Status CheckRange(absl::string_view field, int32_t value, int32_t limit) {
  if (value < 1 || value > limit) return Invalid(field, value, absl::StrCat("in [1, ", limit, "]"));
  return absl::OkStatus();
}

}  // namespace

absl::Status ModelConfig::Validate() const {
  if (absl::Status s = CheckRange("dim", dim, kMaxModelDim); !s.ok()) return s;
  if (absl::Status s = CheckRange("hidden_dim", hidden_dim, kMaxModelHiddenDim); !s.ok()) return s;
  if (absl::Status s = CheckRange("num_layers", num_layers, kMaxModelLayers); !s.ok()) return s;
  if (absl::Status s = CheckRange("q_heads", q_heads, kMaxModelHeads); !s.ok()) return s;
  if (absl::Status s = CheckRange("kv_heads", kv_heads, kMaxModelHeads); !s.ok()) return s;
  if (absl::Status s = CheckRange("vocab_size", vocab_size, kMaxModelVocab); !s.ok()) return s;
  if (absl::Status s = CheckRange("max_seq_len", max_seq_len, kMaxModelSeqLen); !s.ok()) return s;
  if (dim % q_heads != 0) {
    return Invalid("dim", dim, absl::StrCat("a multiple of q_heads (", q_heads, ")"));
  }
  if (q_heads % kv_heads != 0) {
    return Invalid("q_heads", q_heads, absl::StrCat("a multiple of kv_heads (", kv_heads, ")"));
  }
  if (head_dim() % 2 != 0) {
    return Invalid("dim / q_heads (head_dim)", head_dim(), "even (RoPE rotates pairs)");
  }
  if (!(norm_eps > 0.0f) || !std::isfinite(norm_eps)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ModelConfig.norm_eps = ", norm_eps, " is invalid: must be finite and > 0"));
  }
  if (!(rope_theta > 1.0f) || !std::isfinite(rope_theta)) {
    return absl::InvalidArgumentError(absl::StrCat("ModelConfig.rope_theta = ", rope_theta,
                                                   " is invalid: must be finite and > 1"));
  }
  if (bos_token < 0 || bos_token >= vocab_size) {
    return Invalid("bos_token", bos_token, absl::StrCat("in [0, ", vocab_size, ")"));
  }
  if (eos_token < 0 || eos_token >= vocab_size) {
    return Invalid("eos_token", eos_token, absl::StrCat("in [0, ", vocab_size, ")"));
  }
  return absl::OkStatus();
}

int64_t ModelConfig::ParameterCount() const {
  const int64_t d = dim, h = hidden_dim, kv = kv_dim();
  const int64_t per_layer = 2 * d         // attention and FFN RMSNorm weights
                            + d * d       // wq
                            + 2 * d * kv  // wk, wv
                            + d * d       // wo
                            + 3 * d * h;  // w1, w2, w3
  const int64_t embedding = int64_t{vocab_size} * d;
  return embedding + num_layers * per_layer + d + (shared_classifier ? 0 : embedding);
}

std::string ModelConfig::DebugString() const {
  return absl::StrFormat(
      "dim=%d hidden_dim=%d layers=%d q_heads=%d kv_heads=%d head_dim=%d vocab=%d "
      "max_seq_len=%d shared_classifier=%d",
      dim, hidden_dim, num_layers, q_heads, kv_heads, head_dim(), vocab_size, max_seq_len,
      shared_classifier ? 1 : 0);
}

}  // namespace int4kv
