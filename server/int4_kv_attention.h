// KvAttention over the INT4 cache on the CPU: each layer's new K/V are quantized into their
// slots with StoreKvHost, then the "cpu" decode-attention backend reads the cache through the
// req_to_token table, one backend row per token of the step.
//
// Prefill cost: a prompt of L tokens becomes L backend rows with seq_len 1..L, so the backend
// dequantizes O(L^2 / 2) K/V rows per layer and head (a flash-style prefill kernel would read
// each once per query tile). The FLOPs are those of causal attention; the extra cost is
// dequantization and memory traffic. Fine for short prompts; a dedicated prefill kernel is the
// fix for long ones.
#ifndef INT4KV_SERVER_INT4_KV_ATTENTION_H_
#define INT4KV_SERVER_INT4_KV_ATTENTION_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "backend/decode_attention_backend.h"
#include "kv_cache/kv_cache.h"
#include "server/kv_attention.h"

namespace int4kv {

class Int4KvAttention : public KvAttention {
 public:
  // cache: a host-memory cache, not owned, outliving this object. The backend is sized for
  // max_step_tokens rows and the cache's max_seq_len. threads: backend workers (0: one per
  // hardware thread).
  static absl::StatusOr<std::unique_ptr<Int4KvAttention>> Create(KvCache* cache, int32_t q_heads,
                                                                 int32_t max_step_tokens,
                                                                 int threads);

  absl::string_view name() const override { return "int4"; }
  absl::Status Plan(const StepBatch& batch) override;
  absl::Status Attend(int32_t layer, const void* q, const void* k, const void* v,
                      void* out) override;

 private:
  Int4KvAttention(KvCache* cache, std::unique_ptr<DecodeAttentionBackend> backend);

  KvCache* cache_;
  std::unique_ptr<DecodeAttentionBackend> backend_;
  std::vector<int32_t> slots_;  // [num_tokens] of the planned step
  bool planned_ = false;        // the last Plan succeeded
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_INT4_KV_ATTENTION_H_
