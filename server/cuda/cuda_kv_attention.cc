#include "server/cuda/cuda_kv_attention.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>

#include "absl/strings/str_cat.h"
#include "backend/create_backend.h"
#include "common/cuda_check.h"
#include "common/status_macros.h"
#include "kv_cache/store_kv_cuda.h"
#include "server/step_batch.h"

namespace int4kv {

absl::StatusOr<std::unique_ptr<CudaKvAttention>> CudaKvAttention::Create(
    KvCache* cache, int32_t q_heads, int32_t max_step_tokens, DType io_dtype, CudaStream stream) {
  if (cache == nullptr) return absl::InvalidArgumentError("CudaKvAttention: cache is null");
  if (cache->memory_kind() != MemoryKind::kDevice) {
    return absl::InvalidArgumentError("CudaKvAttention needs a device-memory KV cache");
  }
  if (max_step_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_step_tokens = ", max_step_tokens, " is invalid: must be >= 1"));
  }
  std::unique_ptr<CudaKvAttention> attention(
      new CudaKvAttention(cache, max_step_tokens, io_dtype, stream));
  const AttentionShape shape = ShapeFor(*cache, q_heads, max_step_tokens);
  BackendOptions options;
  options.io_dtype = io_dtype;
  ASSIGN_OR_RETURN(attention->backend_,
                   CreateDecodeAttentionBackend("cuda", attention->binding_, shape, options));
  const size_t slot_bytes = sizeof(int32_t) * max_step_tokens;
  RETURN_IF_ERROR(attention->device_slots_.Allocate(slot_bytes, "the step's KV slots"));
  RETURN_IF_ERROR(attention->staging_.Allocate(slot_bytes, "the step's KV slot staging"));
  RETURN_IF_ERROR(attention->staging_done_.Create(/*timing=*/false));
  CUDA_RETURN_IF_ERROR(cudaEventRecord(attention->staging_done_.get(), stream));
  attention->rows_.reserve(max_step_tokens);
  attention->slots_.reserve(max_step_tokens);
  return attention;
}

namespace {

uint64_t NextAttentionId() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

CudaKvAttention::CudaKvAttention(KvCache* cache, int32_t max_rows, DType io_dtype,
                                 CudaStream stream)
    : id_(NextAttentionId()),
      cache_(cache),
      max_rows_(max_rows),
      io_dtype_(io_dtype),
      stream_(stream),
      binding_(BindingFor(*cache)) {}

CudaKvAttention::~CudaKvAttention() {
  // The pinned staging may still feed a copy; the backend's destructor waits for its own.
  if (staging_done_.get() != nullptr) cudaEventSynchronize(staging_done_.get());
}

absl::Status CudaKvAttention::Plan(const StepBatch& batch) {
  // A failed Plan leaves no plan: Prepare, Store and Run then fail rather than use the last
  // step's rows and slots.
  planned_ = -1;
  prepared_ = -1;
  const int32_t n = batch.num_tokens();
  RETURN_IF_ERROR(CheckSlotsAndRows(batch, cache_->requests()));
  if (n > max_rows_) {
    return absl::InvalidArgumentError(
        absl::StrCat("step of ", n, " tokens exceeds ", max_rows_, " (max_step_tokens)"));
  }
  // The new entries go to the device table first: the rows are checked against what it holds.
  RETURN_IF_ERROR(cache_->requests().SyncToDevice(stream_));
  RETURN_IF_ERROR(ValidateRows(batch.rows, backend_->shape(), binding_));
  const int32_t num_slots = binding_.view.layout.num_slots;
  for (int32_t i = 0; i < n; ++i) {
    if (batch.slots[i] < 0 || batch.slots[i] >= num_slots) {
      return absl::InvalidArgumentError(absl::StrCat("StepBatch.slots[", i, "] = ", batch.slots[i],
                                                     " is out of range [0, ", num_slots, ")"));
    }
  }
  rows_.assign(batch.rows.begin(), batch.rows.end());
  slots_.assign(batch.slots.begin(), batch.slots.end());
  planned_ = n;
  prepared_ = -1;
  return absl::OkStatus();
}

absl::Status CudaKvAttention::Prepare(int32_t rows) {
  // A failed Prepare leaves nothing prepared: the slot buffer may already hold this call's
  // slots, or the backend keep no plan, so Store and Run must not use the last Prepare's rows.
  prepared_ = -1;
  if (planned_ < 0) return absl::FailedPreconditionError("CudaKvAttention::Prepare before Plan");
  if (rows < planned_ || rows > max_rows_) {
    return absl::InvalidArgumentError(absl::StrCat("prepared rows = ", rows, " is out of range [",
                                                   planned_, " (planned tokens), ", max_rows_,
                                                   " (max_step_tokens)]"));
  }
  rows_.resize(planned_);
  rows_.resize(rows, DecodeRow{0, 0});  // padded rows: no context, output zeros
  // The pinned staging may still feed the previous step's copy.
  CUDA_RETURN_IF_ERROR(cudaEventSynchronize(staging_done_.get()));
  int32_t* staging = staging_.as<int32_t>();
  std::copy(slots_.begin(), slots_.end(), staging);
  std::fill(staging + planned_, staging + rows, 0);  // padded rows write the reserved slot 0
  if (rows > 0) {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(device_slots_.get(), staging, sizeof(int32_t) * rows,
                                         cudaMemcpyHostToDevice, stream_));
  }
  CUDA_RETURN_IF_ERROR(cudaEventRecord(staging_done_.get(), stream_));
  RETURN_IF_ERROR(backend_->Plan(rows_, stream_));
  prepared_ = rows;
  return absl::OkStatus();
}

absl::Status CudaKvAttention::Store(int32_t layer, const void* k, const void* v,
                                    int64_t token_stride) {
  if (prepared_ < 0) return absl::FailedPreconditionError("CudaKvAttention::Store before Prepare");
  KvRows kv;
  kv.k = k;
  kv.v = v;
  kv.dtype = io_dtype_;
  kv.token_stride = token_stride;
  return StoreKvCuda(binding_.view, layer, device_slots_.as<int32_t>(), prepared_, kv, stream_);
}

absl::Status CudaKvAttention::Run(int32_t layer, const void* q, void* out) {
  if (prepared_ < 0) return absl::FailedPreconditionError("CudaKvAttention::Run before Prepare");
  return backend_->Run(layer, q, out, stream_);
}

absl::Status CudaKvAttention::Attend(int32_t layer, const void* q, const void* k, const void* v,
                                     void* out) {
  if (prepared_ < 0) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(stream_, &capture));
    if (capture != cudaStreamCaptureStatusNone) {
      return absl::FailedPreconditionError(
          "CudaKvAttention::Attend during graph capture needs a Prepare before the capture");
    }
    RETURN_IF_ERROR(Prepare(planned_));
  }
  RETURN_IF_ERROR(Store(layer, k, v, /*token_stride=*/0));
  return Run(layer, q, out);
}

}  // namespace int4kv
