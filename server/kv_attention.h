// The model's attention over the paged KV cache, behind a small interface so the model's
// layers do not know how K/V are stored:
//   Int4KvAttention (int4_kv_attention.h)  the product path: StoreKvHost into the INT4 cache,
//                                          then the decode-attention backend.
//   FloatKvAttention (testing)             K/V kept in float32, for exactness tests.
// A CUDA implementation (StoreKvCuda + the "cuda" backend, req_to_token synced to the device
// in Plan) plugs in here beside a CUDA model.
//
// Thread ownership: used by the engine's scheduler thread only.
#ifndef INT4KV_SERVER_KV_ATTENTION_H_
#define INT4KV_SERVER_KV_ATTENTION_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/step_batch.h"

namespace int4kv {

class KvAttention {
 public:
  virtual ~KvAttention() = default;

  virtual absl::string_view name() const = 0;

  // Records the step's rows (batch.rows, batch.slots) for the following Attend calls; called
  // once a step, before the first layer. batch.num_tokens() must not exceed the token budget
  // the attention was created for. A failed Plan leaves no plan: Attend then fails, without
  // writing K/V anywhere, until a Plan succeeds (never into the previous step's slots).
  virtual absl::Status Plan(const StepBatch& batch) = 0;

  // For one layer: writes each token's K/V into its slot, then computes attention of each
  // token's query heads over its row's context (which includes the token itself).
  //   q, out: [num_tokens][q_heads][head_dim];  k, v: [num_tokens][kv_heads][head_dim]
  // Elements and memory are the model's activations (float32 host memory on the CPU path).
  virtual absl::Status Attend(int32_t layer, const void* q, const void* k, const void* v,
                              void* out) = 0;
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_KV_ATTENTION_H_
