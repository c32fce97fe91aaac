// KvAttention that bypasses quantization: K/V are kept in float32 per slot and attention is
// computed in float32, through the same slots and req_to_token table as the INT4 path. Used
// only to check the engine against an unquantized reference forward.
#ifndef INT4KV_SERVER_TESTING_FLOAT_KV_ATTENTION_H_
#define INT4KV_SERVER_TESTING_FLOAT_KV_ATTENTION_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kv_cache/kv_cache.h"
#include "server/kv_attention.h"

namespace int4kv {

class FloatKvAttention : public KvAttention {
 public:
  // cache: not owned; its slots and host req_to_token table address the float store.
  static absl::StatusOr<std::unique_ptr<FloatKvAttention>> Create(const KvCache* cache,
                                                                  int32_t q_heads,
                                                                  int32_t max_step_tokens);

  absl::string_view name() const override { return "float"; }
  absl::Status Plan(const StepBatch& batch) override;
  absl::Status Attend(int32_t layer, const void* q, const void* k, const void* v,
                      void* out) override;

 private:
  FloatKvAttention(const KvCache* cache, int32_t q_heads, int32_t max_step_tokens);
  float* Row(int32_t layer, int32_t slot, int32_t kv);  // kv: 0 for K, 1 for V

  const KvCache* cache_;
  int32_t q_heads_;
  int32_t kv_heads_;
  int32_t head_dim_;
  int32_t max_step_tokens_;
  int64_t num_slots_;
  std::vector<float> store_;  // [layers][num_slots][2][kv_heads][head_dim]
  StepBatch plan_;
  bool planned_ = false;       // the last Plan succeeded
  std::vector<float> scores_;  // [max_seq_len] scratch
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_TESTING_FLOAT_KV_ATTENTION_H_
