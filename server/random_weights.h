// Seeded random-weight models for benchmarks and tests: the same (config, seed) gives the
// same weights bit for bit, whatever the thread count.
#ifndef INT4KV_SERVER_RANDOM_WEIGHTS_H_
#define INT4KV_SERVER_RANDOM_WEIGHTS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/llama_weights.h"
#include "server/model_config.h"

namespace int4kv {

// Presets:
//   tiny     dim 128, hidden 384, 2 layers, 4 q heads, 2 KV heads (head_dim 32), vocab 512,
//            max_seq_len 2048
//   llama8b  Llama-3-8B shaped: dim 4096, hidden 14336, 32 layers, 32 q heads, 8 KV heads
//            (head_dim 128), vocab 32000, max_seq_len 8192, rope_theta 500000.
//            About 0.87 GB of float32 weights per layer plus 1 GB of embeddings.
// `num_layers` 0 keeps the preset's count; otherwise it must be in [1, kMaxModelLayers].
// InvalidArgument for an unknown name (the message lists the presets).
absl::StatusOr<ModelConfig> PresetConfig(absl::string_view name, int32_t num_layers = 0);

// Weights for a valid config: norms are 1 and every other element is uniform with variance
// 1 / fan_in (so activations keep their scale through the layers), drawn from a counter-based
// generator keyed by (seed, tensor, element). `threads` 0 means one per hardware thread.
// ResourceExhausted when the weights do not fit in memory.
absl::StatusOr<LlamaWeights> RandomWeights(const ModelConfig& config, uint64_t seed,
                                           int threads = 0);

}  // namespace int4kv

#endif  // INT4KV_SERVER_RANDOM_WEIGHTS_H_
