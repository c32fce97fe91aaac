// The engine's configuration, with validation against the model it serves. Zero fields take
// defaults derived from the model; Resolve() fills them in and checks everything once.
#ifndef INT4KV_SERVER_ENGINE_CONFIG_H_
#define INT4KV_SERVER_ENGINE_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/dtype.h"
#include "kv_cache/int4_layout.h"
#include "kv_cache/kv_cache_config.h"
#include "server/model_config.h"

namespace int4kv {

constexpr int32_t kMaxEngineBatch = 4096;
constexpr int32_t kMaxEngineQueue = 1 << 20;
constexpr int32_t kMaxStepTokens = 65536;  // the backend's max_batch limit
constexpr int32_t kDefaultStepTokens = 512;
constexpr int32_t kMaxEngineThreads = 1024;  // EngineConfig::threads

// EngineConfig::device with "auto" made a choice: "cuda" when a CUDA device is visible, else
// "cpu". Other values come back as they are.
std::string ResolveDevice(absl::string_view device);

struct EngineConfig {
  // "cpu", "cuda", or "auto" (cuda when a CUDA device is visible, else cpu; Resolve replaces
  // it with the choice).
  std::string device = "cpu";
  int32_t max_batch = 8;  // running requests, in [1, kMaxEngineBatch]
  // Requests waiting for admission, beyond those the next step admits (in order, while batch
  // rows and KV slots last), in [1, kMaxEngineQueue].
  int32_t max_queue = 64;
  // Longest sequence (prompt + generated tokens); 0: the model's max_seq_len, which is also
  // the upper limit.
  int32_t max_seq_len = 0;
  // Largest max_new_tokens a request may ask for; 0: max_seq_len - 1.
  int32_t max_new_tokens_limit = 0;
  // Tokens per forward pass (decode tokens plus prefill chunks), in [max_batch,
  // kMaxStepTokens]; 0: max(max_batch, min(max_seq_len, kDefaultStepTokens)). Long prompts
  // are prefilled in chunks of what is left of it.
  int32_t max_step_tokens = 0;
  // KV capacity: token slots, a byte budget turned into slots (CapacityForBudget), or (cuda
  // only) a fraction of free GPU memory; at most one of the three may be set. All 0:
  // max_batch * max_seq_len slots.
  int64_t kv_capacity_slots = 0;
  int64_t kv_budget_bytes = 0;
  // In (0, 1], 0: unused. The KV pools get this fraction of the GPU memory that is free once
  // the model and every other start-up buffer exist (the rule is in server/cuda/kv_gpu_sizing.h).
  // Resolve leaves kv_capacity_slots 0 for it; Scheduler::Create measures the memory and sets
  // it (Scheduler::config(), Engine::config(), EngineInfo::slots_total).
  double kv_gpu_memory_fraction = 0.0;
  int32_t group_size = 8;  // 8, 16, 32, 64 or 128, dividing the model's head_dim
  QuantMode quant_mode = QuantMode::kSymmetric;
  ParamDtype param_dtype = ParamDtype::kFloat16;
  int32_t threads = 0;  // CPU worker threads for the model and the backend; 0: one per core
  // cuda only: element type of the weights and activations, float16 or bfloat16 (float32
  // accumulation either way).
  DType cuda_dtype = DType::kFloat16;
  // cuda only: replay decode-only steps from CUDA graphs captured at start-up, one per batch
  // bucket (1, 2, 4, ..., 256, capped at max_batch). Off: the same steps run eagerly, with the
  // same bucket padding and results.
  bool cuda_graphs = true;

  // A copy with every default filled in and kv_capacity_slots set (left 0 with
  // kv_gpu_memory_fraction), or InvalidArgument naming the first bad field and its allowed
  // range.
  absl::StatusOr<EngineConfig> Resolve(const ModelConfig& model) const;

  // The KV cache of a resolved config for `model` (max_requests = max_batch; capacity 0 while
  // kv_gpu_memory_fraction waits for Scheduler::Create to size it).
  KvCacheConfig KvConfig(const ModelConfig& model) const;
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_ENGINE_CONFIG_H_
