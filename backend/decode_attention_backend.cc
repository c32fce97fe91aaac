#include "backend/decode_attention_backend.h"

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/cuda_check.h"
#include "common/exact_number.h"
#include "common/status_macros.h"
#include "kv_cache/kv_cache.h"
#include "kv_cache/kv_cache_config.h"

namespace int4kv {

KvCacheBinding BindingFor(const KvCache& cache) {
  KvCacheBinding binding;
  binding.view = cache.view();
  binding.req_to_token = cache.memory_kind() == MemoryKind::kDevice
                             ? cache.requests().device_table()
                             : cache.requests().host_table();
  binding.max_requests = cache.requests().max_requests();
  binding.req_to_token_stride = cache.requests().max_seq_len();
  binding.requests = &cache.requests();
  return binding;
}

AttentionShape ShapeFor(const KvCache& cache, int32_t q_heads, int32_t max_batch) {
  AttentionShape shape;
  shape.q_heads = q_heads;
  shape.kv_heads = cache.config().kv_heads;
  shape.head_dim = cache.config().head_dim;
  shape.max_batch = max_batch;
  shape.max_seq_len = cache.config().max_seq_len;
  return shape;
}

float SoftmaxScale(const AttentionShape& shape) {
  return shape.softmax_scale != 0.0f ? shape.softmax_scale
                                     : 1.0f / std::sqrt(static_cast<float>(shape.head_dim));
}

absl::Status ValidateBackendOptions(const BackendOptions& options, const AttentionShape& shape) {
  const int64_t row = int64_t{shape.q_heads} * shape.head_dim;
  for (const auto& [field, stride] :
       {std::pair<const char*, int64_t>{"q_row_stride", options.q_row_stride},
        {"out_row_stride", options.out_row_stride}}) {
    if (stride != 0 && (stride < row || stride > kMaxRowStride)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "BackendOptions.", field, " = ", stride, " is invalid: must be 0 (dense rows) or in [",
          row, " (q_heads x head_dim), ", kMaxRowStride, "]"));
    }
  }
  if (options.cpu_threads < 0 || options.cpu_threads > kMaxCpuThreads) {
    return absl::InvalidArgumentError(
        absl::StrCat("BackendOptions.cpu_threads = ", options.cpu_threads,
                     " is invalid: must be in [0, ", kMaxCpuThreads, "]"));
  }
  if (options.batch_invariant_splits < 0 ||
      options.batch_invariant_splits > kMaxBatchInvariantSplits) {
    return absl::InvalidArgumentError(absl::StrCat(
        "BackendOptions.batch_invariant_splits = ", options.batch_invariant_splits,
        " is out of range: must be 0 (off) or in [1, ", kMaxBatchInvariantSplits, "]"));
  }
  return absl::OkStatus();
}

namespace {

// A binding that names its RequestTable is checked against it (Plan's row checks use the
// table's bookkeeping, and the kernels index req_to_token with the binding's fields): the
// table is the table's own host or device copy, with its row count, row length and slots.
absl::Status ValidateBindingMatchesItsTable(const KvCacheBinding& cache) {
  const RequestTable& table = *cache.requests;
  if (cache.req_to_token != table.host_table() && cache.req_to_token != table.device_table()) {
    return absl::InvalidArgumentError(
        "KvCacheBinding.req_to_token is neither the host table nor the device mirror of "
        "KvCacheBinding.requests (clear requests for a table of your own)");
  }
  auto mismatch = [](absl::string_view field, int64_t value, absl::string_view table_field,
                     int64_t table_value) {
    return absl::InvalidArgumentError(absl::StrCat("KvCacheBinding.", field, " = ", value,
                                                   " does not match KvCacheBinding.requests' ",
                                                   table_field, " (", table_value, ")"));
  };
  if (cache.max_requests != table.max_requests()) {
    return mismatch("max_requests", cache.max_requests, "max_requests", table.max_requests());
  }
  if (cache.req_to_token_stride != table.max_seq_len()) {
    return mismatch("req_to_token_stride", cache.req_to_token_stride, "max_seq_len",
                    table.max_seq_len());
  }
  if (cache.view.layout.num_slots != table.num_slots()) {
    return mismatch("view.layout.num_slots", cache.view.layout.num_slots, "num_slots",
                    table.num_slots());
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateShape(const AttentionShape& shape, const KvCacheBinding& cache) {
  // The binding first: a hand-filled one may describe no cache at all.
  RETURN_IF_ERROR(ValidateCacheView(cache.view));
  if (cache.req_to_token == nullptr) {
    return absl::InvalidArgumentError(
        "KvCacheBinding.req_to_token is null (for a device cache, create it with "
        "MemoryKind::kDevice so the table has its device mirror)");
  }
  if (cache.max_requests < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KvCacheBinding.max_requests = ", cache.max_requests, " is invalid: must be >= 1"));
  }
  if (cache.req_to_token_stride < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvCacheBinding.req_to_token_stride = ", cache.req_to_token_stride,
                     " is invalid: must be >= 1"));
  }
  if (cache.requests != nullptr) RETURN_IF_ERROR(ValidateBindingMatchesItsTable(cache));
  const KvLayout& layout = cache.view.layout;
  auto bad = [](absl::string_view field, int64_t value, absl::string_view rule) {
    return absl::InvalidArgumentError(
        absl::StrCat("AttentionShape.", field, " = ", value, " is invalid: must be ", rule));
  };
  if (shape.kv_heads != layout.kv_heads) {
    return bad("kv_heads", shape.kv_heads,
               absl::StrCat("the cache's kv_heads (", layout.kv_heads, ")"));
  }
  if (shape.head_dim != layout.head_dim) {
    return bad("head_dim", shape.head_dim,
               absl::StrCat("the cache's head_dim (", layout.head_dim, ")"));
  }
  if (shape.q_heads < shape.kv_heads || shape.q_heads % shape.kv_heads != 0 ||
      shape.q_heads / shape.kv_heads > kMaxQueryHeadsPerKvHead) {
    return bad("q_heads", shape.q_heads,
               absl::StrCat("a multiple of kv_heads (", shape.kv_heads, ") with at most ",
                            kMaxQueryHeadsPerKvHead, " query heads per KV head"));
  }
  if (shape.max_batch < 1 || shape.max_batch > kMaxBatch) {
    return bad("max_batch", shape.max_batch, absl::StrCat("in [1, ", kMaxBatch, "]"));
  }
  if (shape.max_seq_len < 1 || shape.max_seq_len > cache.req_to_token_stride) {
    return bad(
        "max_seq_len", shape.max_seq_len,
        absl::StrCat("in [1, ", cache.req_to_token_stride, "] (the req_to_token row length)"));
  }
  // Written so that NaN fails too.
  if (!(shape.softmax_scale >= 0.0f && shape.softmax_scale <= kMaxSoftmaxScale)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AttentionShape.softmax_scale = ", ExactNumber(shape.softmax_scale),
        " is invalid: must be in [0, ", kMaxSoftmaxScale, "] (0 means 1 / sqrt(head_dim))"));
  }
  if (!IsValidLogitSoftCap(shape.logit_soft_cap)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AttentionShape.logit_soft_cap = ", ExactNumber(shape.logit_soft_cap),
        " is invalid: must be 0 (no cap) or in [", kMinLogitSoftCap, ", ", kMaxLogitSoftCap, "]"));
  }
  return absl::OkStatus();
}

absl::Status ValidateRows(absl::Span<const DecodeRow> rows, const AttentionShape& shape,
                          const KvCacheBinding& cache) {
  if (rows.size() > static_cast<size_t>(shape.max_batch)) {
    return absl::InvalidArgumentError(absl::StrCat("batch of ", rows.size(),
                                                   " rows exceeds AttentionShape.max_batch (",
                                                   shape.max_batch, ")"));
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    const DecodeRow& row = rows[i];
    if (row.seq_len < 0 || row.seq_len > shape.max_seq_len) {
      return absl::InvalidArgumentError(absl::StrCat("rows[", i, "].seq_len = ", row.seq_len,
                                                     " is out of range [0, ", shape.max_seq_len,
                                                     "] (AttentionShape.max_seq_len)"));
    }
    if (row.first_token < 0 || row.first_token > row.seq_len) {
      return absl::InvalidArgumentError(
          absl::StrCat("rows[", i, "].first_token = ", row.first_token, " is out of range [0, ",
                       row.seq_len, "] (its seq_len)"));
    }
    if (row.seq_len == 0) continue;
    if (row.request < 0 || row.request >= cache.max_requests) {
      return absl::InvalidArgumentError(absl::StrCat("rows[", i, "].request = ", row.request,
                                                     " is out of range [0, ", cache.max_requests,
                                                     ") (KvCacheBinding.max_requests)"));
    }
    if (cache.requests == nullptr) continue;
    if (!cache.requests->IsLive(row.request)) {
      return absl::InvalidArgumentError(
          absl::StrCat("rows[", i, "].request = ", row.request, " is not a live request"));
    }
    const int32_t length = cache.requests->Length(row.request);
    if (row.seq_len > length) {
      return absl::InvalidArgumentError(absl::StrCat(
          "rows[", i, "].seq_len = ", row.seq_len, " exceeds the ", length, " tokens of request ",
          row.request, ": its later req_to_token entries are not its own"));
    }
    // A binding that reads the device mirror sees only what SyncToDevice sent; a reused row's
    // mirror holds the previous request's slots past that.
    if (cache.requests->device_table() != nullptr &&
        cache.req_to_token == cache.requests->device_table()) {
      const int32_t synced = cache.requests->SyncedLength(row.request);
      if (row.seq_len > synced) {
        return absl::FailedPreconditionError(absl::StrCat(
            "rows[", i, "].seq_len = ", row.seq_len, " exceeds the ", synced,
            " tokens of request ", row.request,
            " in the device req_to_token table: call requests().SyncToDevice(stream) after "
            "Append, before Plan"));
      }
    }
  }
  return absl::OkStatus();
}

RowStrides ResolvedRowStrides(const BackendOptions& options, const AttentionShape& shape) {
  const int64_t dense = int64_t{shape.q_heads} * shape.head_dim;
  return {options.q_row_stride != 0 ? options.q_row_stride : dense,
          options.out_row_stride != 0 ? options.out_row_stride : dense};
}

namespace {

// The bytes [begin, end) a buffer of `rows` rows spans, from its first row's start to its last
// row's end (the gaps of wider strides included).
struct ByteSpan {
  const char* name;
  uintptr_t begin;
  uintptr_t end;
};

ByteSpan SpanOf(const char* name, const void* buffer, int32_t rows, int64_t row_stride,
                int64_t row_elements, int element_bytes) {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(buffer);
  const uint64_t elements = rows == 0 ? 0 : uint64_t(rows - 1) * row_stride + row_elements;
  return {name, begin, begin + elements * element_bytes};
}

bool Overlap(const ByteSpan& a, const ByteSpan& b) { return a.begin < b.end && b.begin < a.end; }

std::string Describe(const ByteSpan& span) {
  return absl::StrCat(span.name, " [", absl::Hex(span.begin), ", ", absl::Hex(span.end), ")");
}

}  // namespace

absl::Status ValidateRunBuffers(const void* q, const void* out, const float* lse, int32_t batch,
                                const AttentionShape& shape, const RowStrides& strides,
                                int io_element_bytes) {
  const int64_t row = int64_t{shape.q_heads} * shape.head_dim;
  const ByteSpan q_span = SpanOf("q", q, batch, strides.q, row, io_element_bytes);
  const ByteSpan out_span = SpanOf("out", out, batch, strides.out, row, io_element_bytes);
  if (q == out && strides.q != strides.out) {
    return absl::InvalidArgumentError(absl::StrCat(
        "q and out are one buffer (attention in place) but their row strides differ (", strides.q,
        " and ", strides.out, " elements): rows would overwrite others' queries"));
  }
  if (q != out && Overlap(q_span, out_span)) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(q_span), " overlaps ", Describe(out_span),
                     ": give one buffer for attention in place, or two apart"));
  }
  if (lse == nullptr) return absl::OkStatus();
  const uintptr_t lse_begin = reinterpret_cast<uintptr_t>(lse);
  if (lse_begin % alignof(float) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "lse must be aligned to its 4-byte elements; it is at ", absl::Hex(lse_begin)));
  }
  const ByteSpan lse_span = SpanOf("lse", lse, batch, shape.q_heads, shape.q_heads, sizeof(float));
  for (const ByteSpan& span : {q_span, out_span}) {
    if (Overlap(lse_span, span)) {
      return absl::InvalidArgumentError(absl::StrCat(
          Describe(lse_span), " overlaps ", Describe(span), ": each needs its own memory"));
    }
  }
  return absl::OkStatus();
}

std::array<BindingPointer, 4> BindingPointers(const KvCacheBinding& cache) {
  return {{{"view.data", cache.view.data, true},
           {"view.scales", cache.view.scales, true},
           {"view.zeros", cache.view.zeros, true},
           {"req_to_token", cache.req_to_token, false}}};
}

absl::Status CheckBindingMemory(const KvCacheBinding& cache, MemoryKind memory,
                                absl::string_view backend) {
  // Without a device every pointer is host memory, and a cpu backend needs nothing else.
  if (memory == MemoryKind::kHost && CudaDeviceCount() == 0) return absl::OkStatus();
  int current_device = -1;
  if (memory == MemoryKind::kDevice) CUDA_RETURN_IF_ERROR(cudaGetDevice(&current_device));
  for (const auto& [field, pointer, pool] : BindingPointers(cache)) {
    if (pointer == nullptr) continue;  // ValidateShape has checked which may be null
    cudaPointerAttributes attributes{};
    const cudaError_t query = cudaPointerGetAttributes(&attributes, pointer);
    if (query != cudaSuccess && memory == MemoryKind::kHost) {
      // The query needs a CUDA context. A device this process cannot use (owned by another
      // process in exclusive mode, out of memory) holds none of its allocations, so a cpu
      // backend on such a machine goes on; the error is cleared, not left for the caller.
      (void)cudaGetLastError();
      continue;
    }
    CUDA_RETURN_IF_ERROR(query);
    if (memory == MemoryKind::kDevice && attributes.type == cudaMemoryTypeUnregistered) {
      return absl::InvalidArgumentError(absl::StrCat(
          "KvCacheBinding.", field, " is pageable host memory: the ", backend,
          " backend needs device memory (a KvCache created with MemoryKind::kDevice)"));
    }
    if (memory == MemoryKind::kDevice && attributes.type == cudaMemoryTypeHost &&
        attributes.devicePointer != pointer) {
      // Pinned host memory the current device cannot reach, or reaches only at another
      // address (where it cannot use host pointers for registered memory): the kernels
      // would fault.
      if (attributes.devicePointer == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            "KvCacheBinding.", field, " is pinned host memory the current device cannot read"));
      }
      return absl::InvalidArgumentError(absl::StrCat(
          "KvCacheBinding.", field, " is pinned host memory the device reads at another address (",
          absl::Hex(reinterpret_cast<uintptr_t>(attributes.devicePointer)),
          "): bind the address cudaHostGetDevicePointer gives"));
    }
    if (memory == MemoryKind::kDevice && attributes.type == cudaMemoryTypeDevice &&
        attributes.device != current_device) {
      return absl::InvalidArgumentError(
          absl::StrCat("KvCacheBinding.", field, " is memory of device ", attributes.device,
                       ": the ", backend, " backend runs on the current device, ", current_device,
                       " (create the KvCache and the backend with the same device current)"));
    }
    if (memory == MemoryKind::kHost && attributes.type == cudaMemoryTypeDevice) {
      return absl::InvalidArgumentError(
          absl::StrCat("KvCacheBinding.", field, " is device memory: the ", backend,
                       " backend needs host memory (a KvCache created with MemoryKind::kHost)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace int4kv
