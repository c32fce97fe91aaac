// KvAttention over a device-memory INT4 cache: each layer's new K/V are quantized into their
// slots with StoreKvCuda, then the "cuda" decode-attention backend reads the cache through the
// device mirror of req_to_token, one backend row per token of the step.
//
// A step has two host phases, both outside any graph capture and on stream():
//   Plan(batch)    checks the rows and slots, keeps them, and syncs req_to_token to the device
//                  (RequestTable::SyncToDevice).
//   Prepare(rows)  pads the planned tokens with (rows - tokens) padded rows (seq_len 0, K/V
//                  written to the reserved slot 0), copies the slots into a fixed device buffer
//                  and plans the backend for exactly `rows` rows, the row count its grid (and a
//                  captured graph) is built for.
// Store / Run (or Attend, which is both) then only launch kernels over those fixed buffers, so
// they can be captured in a CUDA graph and replayed after a later Plan + Prepare of the same
// row count. Attend without Prepare prepares the planned tokens unpadded. A failed Plan leaves
// nothing planned or prepared, and a failed Prepare nothing prepared: Store, Run and Attend then
// fail (Attend after a failed Prepare prepares again) rather than use an earlier step's rows.
//
// Memory: the backend's buffers, the device slot array and its pinned staging are allocated
// at creation for max_step_tokens rows; Plan, Prepare, Store and Run allocate nothing.
//
// Thread ownership: used by the engine's scheduler thread only.
#ifndef INT4KV_SERVER_CUDA_CUDA_KV_ATTENTION_H_
#define INT4KV_SERVER_CUDA_CUDA_KV_ATTENTION_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "backend/decode_attention_backend.h"
#include "common/cuda_stream.h"
#include "common/device_memory.h"
#include "common/dtype.h"
#include "kv_cache/kv_cache.h"
#include "server/kv_attention.h"

namespace int4kv {

class CudaKvAttention : public KvAttention {
 public:
  // cache: a device-memory cache, not owned, outliving this object. io_dtype: element type of
  // q, k, v and out (float16 or bfloat16). stream: not owned (the model's stream); every call
  // is ordered on it. The backend is sized for max_step_tokens rows and the cache's
  // max_seq_len.
  static absl::StatusOr<std::unique_ptr<CudaKvAttention>> Create(KvCache* cache, int32_t q_heads,
                                                                 int32_t max_step_tokens,
                                                                 DType io_dtype, CudaStream stream);
  ~CudaKvAttention() override;

  absl::string_view name() const override { return "int4"; }
  absl::Status Plan(const StepBatch& batch) override;
  // q, out: device [rows][q_heads][head_dim]; k, v: device [rows][kv_heads][head_dim], with
  // rows = the prepared row count.
  absl::Status Attend(int32_t layer, const void* q, const void* k, const void* v,
                      void* out) override;

  // See the header comment. rows in [planned tokens, max_step_tokens].
  absl::Status Prepare(int32_t rows);
  // Quantizes the prepared rows' K/V of `layer` into their slots (padded rows into slot 0).
  //   k, v: device, row r at k + r * token_stride elements (0: kv_heads * head_dim).
  absl::Status Store(int32_t layer, const void* k, const void* v, int64_t token_stride);
  // Attention of the prepared rows over the cache.  q, out: device [rows][q_heads][head_dim].
  absl::Status Run(int32_t layer, const void* q, void* out);

  int32_t planned_tokens() const { return planned_; }  // -1 before the first Plan
  int32_t prepared_rows() const { return prepared_; }  // -1 until Prepare after a Plan
  int32_t max_rows() const { return max_rows_; }
  DType io_dtype() const { return io_dtype_; }
  CudaStream stream() const { return stream_; }
  const KvCache& cache() const { return *cache_; }
  // Unique to this object in the process, never reused (unlike its address, which a later
  // attention may get): what a model's captured graphs remember their attention by.
  uint64_t id() const { return id_; }

 private:
  CudaKvAttention(KvCache* cache, int32_t max_rows, DType io_dtype, CudaStream stream);

  const uint64_t id_;
  KvCache* cache_;
  const int32_t max_rows_;
  const DType io_dtype_;
  const CudaStream stream_;
  KvCacheBinding binding_;
  std::unique_ptr<DecodeAttentionBackend> backend_;

  // Host copies of the planned step, capacity max_rows_ (reserved at creation).
  std::vector<DecodeRow> rows_;  // [prepared rows]: the planned rows, then padded ones
  std::vector<int32_t> slots_;   // [planned tokens]
  int32_t planned_ = -1;
  int32_t prepared_ = -1;

  DeviceBuffer device_slots_;  // [max_rows] int32, read by StoreKvCuda
  PinnedBuffer staging_;       // [max_rows] int32, source of the slot copy
  OwnedEvent staging_done_;    // recorded after each slot copy
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_CUDA_CUDA_KV_ATTENTION_H_
