#include "backend/cuda_decode_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "backend/cuda_decode_kernels.h"
#include "backend/decode_plan.h"
#include "common/cuda_check.h"
#include "common/status_macros.h"

namespace int4kv {
namespace {

constexpr float kLog2E = 1.4426950408889634f;

// Copied to the device with each plan, just ahead of its rows.
struct alignas(8) StepFlags {
  int32_t discard_partials;  // MergeKernelParams::discard_partials
  int32_t large_step;        // SplitKernelParams::large_step
};

int32_t Log2(int32_t power_of_two) {
  int32_t log = 0;
  while ((1 << log) < power_of_two) ++log;
  return log;
}

class CudaDecodeBackend : public DecodeAttentionBackend {
 public:
  CudaDecodeBackend(const KvCacheBinding& cache, const AttentionShape& shape,
                    const BackendOptions& options, const DecodeKernels& kernels, int device,
                    int32_t target_chunks, int64_t l2_resident_tokens)
      : DecodeAttentionBackend(shape),
        cache_(cache),
        device_(device),
        io_dtype_(options.io_dtype),
        strides_(ResolvedRowStrides(options, shape)),
        kernels_(kernels),
        target_chunks_(target_chunks),
        invariant_splits_(options.batch_invariant_splits),
        l2_resident_tokens_(l2_resident_tokens),
        max_capacity_(invariant_splits_ > 0
                          ? BatchInvariantCapacity(shape.max_batch, invariant_splits_)
                          : ChunkCapacity(shape.max_batch, target_chunks,
                                          kernels.max_chunk_tokens(), shape.max_seq_len)) {}

  ~CudaDecodeBackend() override {
    if (staging_done_ != nullptr) {
      cudaEventSynchronize(staging_done_);
      cudaEventDestroy(staging_done_);
    }
    cudaFreeHost(staging_);
    cudaFree(device_chunks_);
    cudaFree(device_step_);
    cudaFree(partial_out_);
    cudaFree(partial_lse_);
  }

  absl::Status Allocate() {
    const size_t chunk_bytes = sizeof(ChunkWork) * max_capacity_;
    const size_t step_bytes = sizeof(StepFlags) + sizeof(RowWork) * shape_.max_batch;
    RETURN_IF_ERROR(Malloc(&staging_, chunk_bytes + step_bytes, /*pinned_host=*/true,
                           "the plan's staging area"));
    RETURN_IF_ERROR(
        Malloc(reinterpret_cast<void**>(&device_chunks_), chunk_bytes, false, "the chunk list"));
    RETURN_IF_ERROR(Malloc(&device_step_, step_bytes, false, "the row list"));
    device_rows_ =
        reinterpret_cast<RowWork*>(static_cast<uint8_t*>(device_step_) + sizeof(StepFlags));
    const size_t partials = static_cast<size_t>(max_capacity_) * shape_.q_heads;
    RETURN_IF_ERROR(Malloc(reinterpret_cast<void**>(&partial_out_),
                           partials * shape_.head_dim * sizeof(float), false,
                           "the partial outputs"));
    RETURN_IF_ERROR(Malloc(reinterpret_cast<void**>(&partial_lse_), partials * sizeof(float), false,
                           "the partial log-sum-exps"));
    CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&staging_done_, cudaEventDisableTiming));
    // The host plan's largest size too, so that no Plan allocates.
    plan_.chunks.reserve(max_capacity_);
    plan_.rows.reserve(shape_.max_batch);
    return absl::OkStatus();
  }

  absl::string_view name() const override { return "cuda"; }
  BackendMemory memory() const override { return memory_; }

  // CudaAllocate of one of Allocate's buffers; errors name it and the shape fields that size it.
  absl::Status Malloc(void** out, size_t bytes, bool pinned_host, const char* what) {
    RETURN_IF_ERROR(CudaAllocate(
        out, bytes, pinned_host,
        absl::StrCat(
            "the cuda backend's ", what, " (AttentionShape.max_batch = ", shape_.max_batch,
            ", max_seq_len = ", shape_.max_seq_len, ", q_heads = ", shape_.q_heads,
            ", head_dim = ", shape_.head_dim,
            invariant_splits_ > 0
                ? absl::StrCat(", BackendOptions.batch_invariant_splits = ", invariant_splits_)
                : "",
            "; room for ", max_capacity_, " chunks)")));
    (pinned_host ? memory_.pinned_host_bytes : memory_.device_bytes) += bytes;
    return absl::OkStatus();
  }

  // The kernels' attributes, the buffers and the binding belong to the device current at
  // creation; launching from another would fault or run on the wrong device.
  absl::Status CheckCurrentDevice() const {
    int current = -1;
    CUDA_RETURN_IF_ERROR(cudaGetDevice(&current));
    if (current == device_) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("the cuda backend was created on device ", device_, " but device ", current,
                     " is current: call cudaSetDevice(", device_, ") first"));
  }

  absl::Status Plan(absl::Span<const DecodeRow> rows, CudaStream stream) override {
    // A failed Plan leaves no plan: Run then refuses rather than run the last step's rows.
    planned_rows_ = -1;
    RETURN_IF_ERROR(CheckCurrentDevice());
    // The wait below is illegal in a capture (and would end it): refused before it.
    RETURN_IF_ERROR(RefuseCapture(stream, "Plan",
                                  "Plan waits on the host, so call it before the capture, and "
                                  "before each replay"));
    RETURN_IF_ERROR(ValidateRows(rows, shape_, cache_));
    if (invariant_splits_ > 0) {
      PlanDecodeBatchInvariant(rows, invariant_splits_, &plan_);
    } else {
      PlanDecode(rows, target_chunks_, kernels_.max_chunk_tokens(), shape_.max_seq_len, &plan_);
    }
    // The pinned staging area may still feed the previous plan's copy.
    CUDA_RETURN_IF_ERROR(cudaEventSynchronize(staging_done_));
    const size_t chunk_bytes = sizeof(ChunkWork) * plan_.chunks.size();
    const size_t row_bytes = sizeof(RowWork) * plan_.rows.size();
    uint8_t* staging = static_cast<uint8_t*>(staging_);
    std::memcpy(staging, plan_.chunks.data(), chunk_bytes);
    StepFlags flags;
    flags.discard_partials = plan_.total_tokens > l2_resident_tokens_ ? 1 : 0;
    flags.large_step =
        plan_.total_tokens * cache_.view.BytesPerSlotPerLayer() >= kLockstepMinStepBytes ? 1 : 0;
    std::memcpy(staging + chunk_bytes, &flags, sizeof(flags));
    std::memcpy(staging + chunk_bytes + sizeof(flags), plan_.rows.data(), row_bytes);
    // From here the device's plan is overwritten: a copy that fails leaves it half old, half
    // new, so no plan counts until both copies are enqueued.
    cudaError_t copied =
        cudaMemcpyAsync(device_chunks_, staging, chunk_bytes, cudaMemcpyHostToDevice, stream);
    if (copied == cudaSuccess) {
      copied = cudaMemcpyAsync(device_step_, staging + chunk_bytes, sizeof(flags) + row_bytes,
                               cudaMemcpyHostToDevice, stream);
    }
    // Recorded whatever failed: a copy enqueued before the failure may still read the staging
    // area, and the next Plan must wait for it before it rewrites the area.
    const cudaError_t recorded = cudaEventRecord(staging_done_, stream);
    RETURN_IF_ERROR(CudaStatus(copied, "cudaMemcpyAsync of the plan to the device"));
    RETURN_IF_ERROR(CudaStatus(recorded, "cudaEventRecord(staging_done_)"));
    capacity_ = static_cast<int32_t>(plan_.chunks.size());
    planned_rows_ = static_cast<int32_t>(rows.size());
    return absl::OkStatus();
  }

  absl::Status RunWithLse(int32_t layer, const void* q, void* out, float* lse,
                          CudaStream stream) override {
    if (layer < 0 || layer >= cache_.view.layout.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " is out of range [0, ",
                                                     cache_.view.layout.num_layers,
                                                     ") (KvCacheView.layout.num_layers)"));
    }
    if (q == nullptr || out == nullptr) {
      return absl::InvalidArgumentError(q == nullptr ? "q is null" : "out is null");
    }
    if (reinterpret_cast<uintptr_t>(q) % kQueryAlignmentBytes != 0) {
      return absl::InvalidArgumentError(absl::StrCat("q must be ", kQueryAlignmentBytes,
                                                     "-byte aligned on the cuda backend; it is at ",
                                                     absl::Hex(reinterpret_cast<uintptr_t>(q))));
    }
    // The merge stores single elements; a misaligned one faults, which the context does not
    // survive.
    if (reinterpret_cast<uintptr_t>(out) % DTypeSize(io_dtype_) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("out must be aligned to its ", DTypeSize(io_dtype_),
                       "-byte elements; it is at ", absl::Hex(reinterpret_cast<uintptr_t>(out))));
    }
    RETURN_IF_ERROR(CheckCurrentDevice());
    if (planned_rows_ < 0) return absl::FailedPreconditionError(kRunWithoutPlan);
    const int32_t batch = planned_rows_;
    RETURN_IF_ERROR(ValidateRunBuffers(q, out, lse, batch, shape_, strides_, DTypeSize(io_dtype_)));
    if (batch == 0) return absl::OkStatus();
    SplitKernelParams split;
    split.cache = cache_.view;
    split.req_to_token = cache_.req_to_token;
    split.req_to_token_stride = cache_.req_to_token_stride;
    split.q = q;
    split.q_row_stride = strides_.q;
    split.q_is_bf16 = io_dtype_ == DType::kBFloat16;
    split.layer = layer;
    split.q_heads = shape_.q_heads;
    split.kv_heads = shape_.kv_heads;
    split.group = shape_.q_heads / shape_.kv_heads;
    split.head_dim = shape_.head_dim;
    split.log2_group_size = Log2(cache_.view.layout.group_size);
    split.scale_log2 = SoftmaxScale(shape_) * kLog2E;
    const float soft_cap = shape_.logit_soft_cap;
    split.soft_cap_log2 = soft_cap * kLog2E;
    split.soft_cap_exp_scale = soft_cap != 0.0f ? 2.0f * split.scale_log2 / soft_cap : 0.0f;
    split.chunks = device_chunks_;
    split.large_step = &static_cast<const StepFlags*>(device_step_)->large_step;
    split.partial_out = partial_out_;
    split.partial_lse = partial_lse_;
    RETURN_IF_ERROR(kernels_.LaunchSplit(split, batch, capacity_, target_chunks_, stream));

    MergeKernelParams merge;
    merge.rows = device_rows_;
    merge.partial_out = partial_out_;
    merge.partial_lse = partial_lse_;
    merge.discard_partials = &static_cast<const StepFlags*>(device_step_)->discard_partials;
    merge.out = out;
    merge.out_row_stride = strides_.out;
    merge.lse = lse;
    merge.out_is_bf16 = io_dtype_ == DType::kBFloat16;
    merge.q_heads = shape_.q_heads;
    merge.head_dim = shape_.head_dim;
    const int32_t typical_chunks_per_row = (target_chunks_ + batch - 1) / batch + 1;
    return kernels_.LaunchMerge(merge, batch, typical_chunks_per_row,
                                /*fixed_order=*/invariant_splits_ > 0, stream);
  }

 private:
  KvCacheBinding cache_;
  const int device_;  // current at creation
  DType io_dtype_;
  RowStrides strides_;  // elements between rows of q and of out
  DecodeKernels kernels_;
  int32_t target_chunks_;
  // BackendOptions.batch_invariant_splits: 0 plans for the whole step (PlanDecode), N > 0
  // cuts each row by its own length into at most N chunks (PlanDecodeBatchInvariant).
  int32_t invariant_splits_;
  // Tokens of one layer's cache that fill the device's L2. A step that reads more evicts its
  // own partials (dirty, so written back to DRAM) before the next step overwrites them, and
  // the merge drops them once read (MergeKernelParams::discard_partials); a smaller one
  // leaves them in L2 to be overwritten in place, which dropping them would only slow.
  int64_t l2_resident_tokens_;
  int32_t max_capacity_;

  // Owned device and pinned buffers, sized for max_batch at creation.
  // pinned [max_capacity] ChunkWork, StepFlags, [max_batch] RowWork
  void* staging_ = nullptr;
  ChunkWork* device_chunks_ = nullptr;  // [max_capacity]
  void* device_step_ = nullptr;         // StepFlags, then [max_batch] RowWork
  RowWork* device_rows_ = nullptr;      // inside device_step_
  float* partial_out_ = nullptr;        // [max_capacity][q_heads][head_dim]
  float* partial_lse_ = nullptr;        // [max_capacity][q_heads]
  cudaEvent_t staging_done_ = nullptr;  // recorded after each plan's copy

  BackendMemory memory_;  // what Allocate allocated

  DecodePlan plan_;       // host copy of the last plan (planned_rows_ rows)
  int32_t capacity_ = 0;  // its chunk slots
};

// The binding's pools must be kPoolAlignmentBytes aligned, its table as int32_t is.
absl::Status CheckAlignment(const KvCacheBinding& cache) {
  for (const auto& [field, pointer, pool] : BindingPointers(cache)) {
    const uintptr_t alignment = pool ? kPoolAlignmentBytes : alignof(int32_t);
    const uintptr_t address = reinterpret_cast<uintptr_t>(pointer);
    if (address % alignment == 0) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        "KvCacheBinding.", field, " = 0x", absl::Hex(address), " is not ", alignment,
        "-byte aligned (", address % alignment, " bytes past a boundary): the cuda backend ",
        "reads it ", alignment, " bytes at a time"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<DecodeAttentionBackend>> CreateCudaDecodeBackend(
    const KvCacheBinding& cache, const AttentionShape& shape, const BackendOptions& options) {
  RETURN_IF_ERROR(ValidateShape(shape, cache));
  if (options.io_dtype != DType::kFloat16 && options.io_dtype != DType::kBFloat16) {
    return absl::InvalidArgumentError(
        absl::StrCat("BackendOptions.io_dtype = ", DTypeName(options.io_dtype),
                     " is invalid for the cuda backend: must be float16 or bfloat16"));
  }
  RETURN_IF_ERROR(ValidateBackendOptions(options, shape));
  // The split kernel loads q 16 bytes at a time, from every row's start.
  if (options.q_row_stride * DTypeSize(options.io_dtype) % kQueryAlignmentBytes != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "BackendOptions.q_row_stride = ", options.q_row_stride,
        " is invalid for the cuda backend: must be a multiple of ",
        kQueryAlignmentBytes / DTypeSize(options.io_dtype), " (16-byte aligned rows)"));
  }
  if (CudaDeviceCount() == 0) {
    return absl::FailedPreconditionError("the cuda backend needs a CUDA device; none found");
  }
  // The kernels read the binding's pools and table directly: pageable host memory, a host
  // KvCache's, would fault on the device and leave the context unusable.
  RETURN_IF_ERROR(CheckBindingMemory(cache, MemoryKind::kDevice, "cuda"));
  RETURN_IF_ERROR(CheckAlignment(cache));
  ASSIGN_OR_RETURN(
      DecodeKernels kernels,
      DecodeKernels::Select(shape.head_dim, shape.q_heads / shape.kv_heads, shape.kv_heads,
                            cache.view.quant_mode, cache.view.param_dtype,
                            cache.view.layout.group_size, shape.logit_soft_cap != 0.0f));
  int device = 0;
  CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  int sms = 0;
  CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int32_t target_chunks = kernels.ChunksPerWave(sms, shape.kv_heads);
  int l2_bytes = 0;
  CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&l2_bytes, cudaDevAttrL2CacheSize, device));
  auto backend =
      std::make_unique<CudaDecodeBackend>(cache, shape, options, kernels, device, target_chunks,
                                          l2_bytes / cache.view.BytesPerSlotPerLayer());
  RETURN_IF_ERROR(backend->Allocate());
  return std::unique_ptr<DecodeAttentionBackend>(std::move(backend));
}

}  // namespace int4kv
