#include "server/int4_kv_attention.h"

#include "absl/strings/str_cat.h"
#include "backend/cpu_decode_backend.h"
#include "common/status_macros.h"
#include "kv_cache/store_kv.h"
#include "server/step_batch.h"

namespace int4kv {

absl::StatusOr<std::unique_ptr<Int4KvAttention>> Int4KvAttention::Create(KvCache* cache,
                                                                         int32_t q_heads,
                                                                         int32_t max_step_tokens,
                                                                         int threads) {
  if (cache == nullptr) return absl::InvalidArgumentError("Int4KvAttention: cache is null");
  if (cache->memory_kind() != MemoryKind::kHost) {
    return absl::InvalidArgumentError("Int4KvAttention needs a host-memory KV cache");
  }
  const AttentionShape shape = ShapeFor(*cache, q_heads, max_step_tokens);
  BackendOptions options;
  options.io_dtype = DType::kFloat32;
  options.cpu_threads = threads;
  ASSIGN_OR_RETURN(std::unique_ptr<DecodeAttentionBackend> backend,
                   CreateCpuDecodeBackend(BindingFor(*cache), shape, options));
  return std::unique_ptr<Int4KvAttention>(new Int4KvAttention(cache, std::move(backend)));
}

Int4KvAttention::Int4KvAttention(KvCache* cache, std::unique_ptr<DecodeAttentionBackend> backend)
    : cache_(cache), backend_(std::move(backend)) {}

absl::Status Int4KvAttention::Plan(const StepBatch& batch) {
  // A failed Plan leaves no plan: the backend may still hold the previous step's rows, and
  // slots_ its slots, which by now may belong to other requests.
  planned_ = false;
  slots_.clear();
  RETURN_IF_ERROR(CheckSlotsAndRows(batch, cache_->requests()));
  RETURN_IF_ERROR(backend_->Plan(batch.rows, /*stream=*/nullptr));
  slots_ = batch.slots;
  planned_ = true;
  return absl::OkStatus();
}

absl::Status Int4KvAttention::Attend(int32_t layer, const void* q, const void* k, const void* v,
                                     void* out) {
  if (!planned_) {
    return absl::FailedPreconditionError("Int4KvAttention::Attend without a successful Plan");
  }
  KvRows rows;
  rows.k = k;
  rows.v = v;
  rows.dtype = DType::kFloat32;
  RETURN_IF_ERROR(StoreKvHost(cache_->view(), layer, slots_, rows));
  return backend_->Run(layer, q, out, /*stream=*/nullptr);
}

}  // namespace int4kv
