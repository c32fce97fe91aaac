#include "server/engine_config.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/cuda_check.h"
#include "common/exact_number.h"
#include "common/status_macros.h"

namespace int4kv {
namespace {

absl::Status Invalid(absl::string_view field, int64_t value, absl::string_view allowed) {
  return absl::InvalidArgumentError(
      absl::StrCat("EngineConfig.", field, " = ", value, " is invalid: must be ", allowed));
}

}  // namespace

std::string ResolveDevice(absl::string_view device) {
  if (device == "auto") return CudaDeviceCount() > 0 ? "cuda" : "cpu";
  return std::string(device);
}

KvCacheConfig EngineConfig::KvConfig(const ModelConfig& model) const {
  KvCacheConfig kv;
  kv.num_layers = model.num_layers;
  kv.kv_heads = model.kv_heads;
  kv.head_dim = model.head_dim();
  kv.group_size = group_size;
  kv.param_dtype = param_dtype;
  kv.quant_mode = quant_mode;
  kv.capacity_slots = kv_capacity_slots;
  kv.max_requests = max_batch;
  kv.max_seq_len = max_seq_len;
  return kv;
}

absl::StatusOr<EngineConfig> EngineConfig::Resolve(const ModelConfig& model) const {
  RETURN_IF_ERROR(model.Validate());
  EngineConfig c = *this;
  c.device = ResolveDevice(c.device);
  if (c.device != "cpu" && c.device != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat("EngineConfig.device = '", c.device,
                                                   "' is invalid: must be cpu, cuda or auto"));
  }
  if (c.cuda_dtype != DType::kFloat16 && c.cuda_dtype != DType::kBFloat16) {
    return absl::InvalidArgumentError(
        absl::StrCat("EngineConfig.cuda_dtype = ", DTypeName(c.cuda_dtype),
                     " is invalid: must be float16 or bfloat16"));
  }
  if (c.max_batch < 1 || c.max_batch > kMaxEngineBatch) {
    return Invalid("max_batch", c.max_batch, absl::StrCat("in [1, ", kMaxEngineBatch, "]"));
  }
  if (c.max_queue < 1 || c.max_queue > kMaxEngineQueue) {
    return Invalid("max_queue", c.max_queue, absl::StrCat("in [1, ", kMaxEngineQueue, "]"));
  }
  if (c.max_seq_len == 0) c.max_seq_len = model.max_seq_len;
  if (c.max_seq_len < 2 || c.max_seq_len > model.max_seq_len) {
    return Invalid("max_seq_len", c.max_seq_len,
                   absl::StrCat("in [2, ", model.max_seq_len, "] (the model's max_seq_len)"));
  }
  if (c.max_new_tokens_limit == 0) c.max_new_tokens_limit = c.max_seq_len - 1;
  if (c.max_new_tokens_limit < 1 || c.max_new_tokens_limit >= c.max_seq_len) {
    return Invalid("max_new_tokens_limit", c.max_new_tokens_limit,
                   absl::StrCat("in [1, ", c.max_seq_len - 1, "] (max_seq_len - 1)"));
  }
  if (c.max_step_tokens == 0) {
    c.max_step_tokens = std::max(c.max_batch, std::min(c.max_seq_len, kDefaultStepTokens));
  }
  if (c.max_step_tokens < c.max_batch || c.max_step_tokens > kMaxStepTokens) {
    return Invalid("max_step_tokens", c.max_step_tokens,
                   absl::StrCat("in [max_batch (", c.max_batch, "), ", kMaxStepTokens, "]"));
  }
  if (!IsSupportedGroupSize(c.group_size))
    return Invalid("group_size", c.group_size, kGroupSizeRule);
  if (model.head_dim() % c.group_size != 0) {
    return Invalid("group_size", c.group_size,
                   absl::StrCat("a divisor of the model's head_dim (", model.head_dim(), ")"));
  }
  if (model.q_heads / model.kv_heads > 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model has ", model.q_heads / model.kv_heads,
                     " query heads per KV head; the decode-attention backend supports at most 16"));
  }
  if (c.threads < 0 || c.threads > kMaxEngineThreads) {
    return Invalid("threads", c.threads, absl::StrCat("in [0, ", kMaxEngineThreads, "]"));
  }
  if (c.kv_capacity_slots < 0) return Invalid("kv_capacity_slots", c.kv_capacity_slots, ">= 0");
  if (c.kv_budget_bytes < 0) return Invalid("kv_budget_bytes", c.kv_budget_bytes, ">= 0");
  if (c.kv_capacity_slots > 0 && c.kv_budget_bytes > 0) {
    return absl::InvalidArgumentError(
        "EngineConfig.kv_capacity_slots and kv_budget_bytes are both set: set at most one");
  }
  // Written so that NaN fails too.
  if (!(c.kv_gpu_memory_fraction >= 0.0 && c.kv_gpu_memory_fraction <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EngineConfig.kv_gpu_memory_fraction = ", ExactNumber(c.kv_gpu_memory_fraction),
        " is invalid: must be in (0, 1], or 0 for unused"));
  }
  if (c.kv_gpu_memory_fraction > 0.0) {
    if (c.device != "cuda") {
      return absl::InvalidArgumentError(
          absl::StrCat("EngineConfig.kv_gpu_memory_fraction needs device cuda, but the device is ",
                       c.device, " (kv_gpu_memory_fraction = ", c.kv_gpu_memory_fraction,
                       "): size the KV cache with kv_budget_bytes or kv_capacity_slots instead"));
    }
    if (c.kv_capacity_slots > 0 || c.kv_budget_bytes > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("EngineConfig.kv_gpu_memory_fraction and ",
                       c.kv_capacity_slots > 0 ? "kv_capacity_slots" : "kv_budget_bytes",
                       " are both set: set at most one of kv_capacity_slots, kv_budget_bytes and "
                       "kv_gpu_memory_fraction"));
    }
    // The scheduler sets the capacity once it has measured the free memory; everything else
    // about the cache is checked now.
    KvCacheConfig kv = c.KvConfig(model);
    kv.capacity_slots = 1;
    RETURN_IF_ERROR(kv.Validate());
    return c;
  }
  if (c.kv_budget_bytes > 0) {
    ASSIGN_OR_RETURN(c.kv_capacity_slots, CapacityForBudget(c.KvConfig(model), c.kv_budget_bytes));
  } else if (c.kv_capacity_slots == 0) {
    c.kv_capacity_slots =
        std::min<int64_t>(int64_t{c.max_batch} * c.max_seq_len, kMaxCapacitySlots);
  }
  if (c.kv_capacity_slots > kMaxCapacitySlots) {
    return Invalid("kv_capacity_slots", c.kv_capacity_slots,
                   absl::StrCat("in [1, ", kMaxCapacitySlots, "]"));
  }
  RETURN_IF_ERROR(c.KvConfig(model).Validate());
  return c;
}

}  // namespace int4kv
