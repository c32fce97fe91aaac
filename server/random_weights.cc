#include "server/random_weights.h"

#include <cmath>
#include <new>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/thread_pool.h"

namespace int4kv {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Fills `tensor` with uniform values in [-limit, limit]; element i depends only on
// (seed, tensor_id, i).
void FillUniform(ThreadPool& pool, uint64_t seed, uint64_t tensor_id, float limit,
                 std::vector<float>* tensor) {
  constexpr int64_t kChunk = 1 << 16;
  const int64_t size = static_cast<int64_t>(tensor->size());
  const uint64_t key = SplitMix64(seed ^ SplitMix64(tensor_id));
  float* data = tensor->data();
  pool.ParallelFor((size + kChunk - 1) / kChunk, [&](int64_t chunk) {
    const int64_t end = std::min(size, (chunk + 1) * kChunk);
    for (int64_t i = chunk * kChunk; i < end; ++i) {
      const uint64_t bits = SplitMix64(key + static_cast<uint64_t>(i));
      // 24 random bits -> [0, 1) exactly representable, then to [-limit, limit).
      const float unit = static_cast<float>(bits >> 40) * (1.0f / 16777216.0f);
      data[i] = (2.0f * unit - 1.0f) * limit;
    }
  });
}

}  // namespace

absl::StatusOr<ModelConfig> PresetConfig(absl::string_view name, int32_t num_layers) {
  ModelConfig config;
  if (name == "tiny") {
    config.dim = 128;
    config.hidden_dim = 384;
    config.num_layers = 2;
    config.q_heads = 4;
    config.kv_heads = 2;
    config.vocab_size = 512;
    config.max_seq_len = 2048;
  } else if (name == "llama8b") {
    config.dim = 4096;
    config.hidden_dim = 14336;
    config.num_layers = 32;
    config.q_heads = 32;
    config.kv_heads = 8;
    config.vocab_size = 32000;
    config.max_seq_len = 8192;
    config.rope_theta = 500000.0f;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown model preset '", name, "': must be tiny or llama8b"));
  }
  if (num_layers != 0) {
    if (num_layers < 1 || num_layers > kMaxModelLayers) {
      return absl::InvalidArgumentError(absl::StrCat("layer count ", num_layers, " of preset '",
                                                     name, "' is invalid: must be in [1, ",
                                                     kMaxModelLayers, "]"));
    }
    config.num_layers = num_layers;
  }
  RETURN_IF_ERROR(config.Validate());
  return config;
}

absl::StatusOr<LlamaWeights> RandomWeights(const ModelConfig& config, uint64_t seed, int threads) {
  RETURN_IF_ERROR(config.Validate());
  LlamaWeights weights;
  try {
    weights.Allocate(config);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", config.ParameterCount(), " float32 weights (",
                     config.ParameterCount() * 4, " bytes) for ", config.DebugString()));
  }
  ThreadPool pool(threads);
  // Uniform in [-a, a] has variance a^2 / 3; a = sqrt(3 / fan_in) gives 1 / fan_in.
  auto limit = [](int64_t fan_in) { return std::sqrt(3.0f / static_cast<float>(fan_in)); };
  uint64_t id = 0;
  // The embedding feeds RMSNorm, so its scale does not matter; unit variance.
  FillUniform(pool, seed, id++, std::sqrt(3.0f), &weights.token_embedding);
  for (LlamaLayerWeights& layer : weights.layers) {
    layer.attention_norm.assign(config.dim, 1.0f);
    layer.ffn_norm.assign(config.dim, 1.0f);
    FillUniform(pool, seed, id++, limit(config.dim), &layer.wq);
    FillUniform(pool, seed, id++, limit(config.dim), &layer.wk);
    FillUniform(pool, seed, id++, limit(config.dim), &layer.wv);
    FillUniform(pool, seed, id++, limit(config.dim), &layer.wo);
    FillUniform(pool, seed, id++, limit(config.dim), &layer.w1);
    FillUniform(pool, seed, id++, limit(config.hidden_dim), &layer.w2);
    FillUniform(pool, seed, id++, limit(config.dim), &layer.w3);
  }
  weights.final_norm.assign(config.dim, 1.0f);
  if (!config.shared_classifier) {
    FillUniform(pool, seed, id++, limit(config.dim), &weights.classifier);
  }
  return weights;
}

}  // namespace int4kv
