#include <cuda_runtime.h>

#include <limits>
#include <new>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/cuda_check.h"
#include "common/device_memory.h"
#include "common/status_macros.h"
#include "kv_cache/kv_cache_config.h"
#include "kv_cache/quantize.h"
#include "kv_cache/store_kv_cuda.h"

namespace int4kv {
namespace {

__device__ __forceinline__ float LoadElement(const void* base, int64_t index, DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return static_cast<const float*>(base)[index];
    case DType::kFloat16:
      return HalfBitsToFloat(static_cast<const uint16_t*>(base)[index]);
    default:
      return Bf16BitsToFloat(static_cast<const uint16_t*>(base)[index]);
  }
}

// One thread per (token, row, group): quantizes group_size values. skipped_tokens: null, or
// the caller's device counter of tokens whose slot is outside the pool (the thread of a
// token's first row and group adds its one).
__global__ void StoreKvKernel(KvCacheView view, int32_t layer, const int32_t* slots,
                              int32_t num_tokens, KvRows rows, int64_t stride,
                              QuantRounding rounding, int32_t* skipped_tokens) {
  // A kernel launched after this one as a programmatic dependent (the decode backend's split
  // kernel, which a model's step runs right after the store) may launch now and do its reads
  // that come before its `griddepcontrol.wait` (its chunk, page-table entries) while the
  // store runs; its wait still waits for this whole grid and its writes. Kernels launched
  // without that attribute start after this one ends, as before. Behind this store a
  // layer-run of 1 x 4096 tokens takes 7.8 us instead of 8.2-8.3, of 1 x 65536 42.1-42.2
  // instead of 42.8-42.9 (H100, `decode_bench --store_before_runs`, docs/PERFORMANCE.md).
  // Launching the store itself as a programmatic dependent too was slower from 128 rows
  // (128 x 1024 79.25 -> 81.9 us; the engine's batch-128 step 1.286 -> 1.299 ms), so it
  // stays a plain launch.
  asm volatile("griddepcontrol.launch_dependents;");
  const KvLayout& layout = view.layout;
  const int groups = layout.GroupsPerRow();
  const int64_t work = static_cast<int64_t>(num_tokens) * layout.RowsPerSlot() * groups;
  for (int64_t item = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; item < work;
       item += int64_t{gridDim.x} * blockDim.x) {
    const int group = static_cast<int>(item % groups);
    const int row = static_cast<int>((item / groups) % layout.RowsPerSlot());
    const int64_t token = item / (int64_t{groups} * layout.RowsPerSlot());
    const int32_t slot = slots[token];
    if (slot < 0 || slot >= layout.num_slots) {
      if (skipped_tokens != nullptr && row == 0 && group == 0) atomicAdd(skipped_tokens, 1);
      continue;
    }
    const bool is_key = row < layout.kv_heads;
    const int head = is_key ? row : row - layout.kv_heads;
    const void* source = is_key ? rows.k : rows.v;
    const int64_t first =
        token * stride + int64_t{head} * layout.head_dim + int64_t{group} * layout.group_size;
    uint16_t* zeros = view.RowZeros(layer, slot, row);
    // Quantize just this group: a row view starting at the group, one group long.
    QuantizeRow([&](int d) { return LoadElement(source, first + d, rows.dtype); },
                layout.group_size, layout.group_size, view.param_dtype, view.quant_mode, rounding,
                view.Row(layer, slot, row) + group * layout.group_size / 2,
                view.RowScales(layer, slot, row) + group,
                zeros == nullptr ? nullptr : zeros + group);
  }
}

// One thread per output element.
__global__ void DequantizeKernel(KvCacheView view, int32_t layer, const int32_t* slots,
                                 int32_t num_tokens, float* out) {
  const KvLayout& layout = view.layout;
  const int64_t per_token = int64_t{layout.RowsPerSlot()} * layout.head_dim;
  const int64_t total = per_token * num_tokens;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t token = i / per_token;
    const int row = static_cast<int>((i % per_token) / layout.head_dim);
    const int d = static_cast<int>(i % layout.head_dim);
    const int32_t slot = slots[token];
    if (slot < 0 || slot >= layout.num_slots) {
      out[i] = 0.0f;
      continue;
    }
    out[i] = DequantizeElement(view.Row(layer, slot, row), view.RowScales(layer, slot, row),
                               view.RowZeros(layer, slot, row), d, layout.group_size,
                               view.param_dtype, view.quant_mode);
  }
}

int GridFor(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<int>(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
}

}  // namespace

absl::Status StoreKvCuda(const KvCacheView& view, int32_t layer, const int32_t* slots,
                         int32_t num_tokens, const KvRows& rows, CudaStream stream,
                         QuantRounding rounding, int32_t* skipped_tokens) {
  if (absl::Status s = ValidateCacheView(view); !s.ok()) return s;
  if (absl::Status s = CheckLayer(view, layer); !s.ok()) return s;
  if (absl::Status s = CheckRounding(rounding); !s.ok()) return s;
  if (num_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_tokens ", num_tokens, " is negative"));
  }
  if (num_tokens == 0) return absl::OkStatus();
  if (slots == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("slots is null with num_tokens = ", num_tokens));
  }
  if (absl::Status s = CheckElementAlignment(slots, sizeof(int32_t), "slots"); !s.ok()) return s;
  if (absl::Status s = CheckElementAlignment(skipped_tokens, sizeof(int32_t), "skipped_tokens");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckRows(rows, view.layout); !s.ok()) return s;
  const KvLayout& layout = view.layout;
  const int64_t stride =
      rows.token_stride != 0 ? rows.token_stride : int64_t{layout.kv_heads} * layout.head_dim;
  const int64_t work = int64_t{num_tokens} * layout.RowsPerSlot() * layout.GroupsPerRow();
  constexpr int kThreads = 128;
  return LaunchKernel("StoreKvKernel launch", StoreKvKernel, GridFor(work, kThreads), kThreads, 0,
                      stream, view, layer, slots, num_tokens, rows, stride, rounding,
                      skipped_tokens);
}

absl::Status DequantizeCuda(const KvCacheView& view, int32_t layer, const int32_t* slots,
                            int32_t num_tokens, float* out, CudaStream stream) {
  if (absl::Status s = ValidateCacheView(view); !s.ok()) return s;
  if (absl::Status s = CheckLayer(view, layer); !s.ok()) return s;
  if (num_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_tokens ", num_tokens, " is negative"));
  }
  if (num_tokens == 0) return absl::OkStatus();
  if (slots == nullptr || out == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(slots == nullptr ? "slots" : "out",
                                                   " is null with num_tokens = ", num_tokens));
  }
  if (absl::Status s = CheckElementAlignment(slots, sizeof(int32_t), "slots"); !s.ok()) return s;
  if (absl::Status s = CheckElementAlignment(out, sizeof(float), "out"); !s.ok()) return s;
  const int64_t total = int64_t{num_tokens} * view.layout.RowsPerSlot() * view.layout.head_dim;
  constexpr int kThreads = 256;
  return LaunchKernel("DequantizeKernel launch", DequantizeKernel, GridFor(total, kThreads),
                      kThreads, 0, stream, view, layer, slots, num_tokens, out);
}

absl::StatusOr<std::vector<float>> DequantizeCudaToHost(const KvCacheView& view, int32_t layer,
                                                        absl::Span<const int32_t> slots,
                                                        CudaStream stream) {
  if (absl::Status s = ValidateCacheView(view); !s.ok()) return s;
  if (absl::Status s = CheckLayer(view, layer); !s.ok()) return s;
  if (slots.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(
        absl::StrCat("slots.size() = ", slots.size(), " is too large: at most 2^31 - 1 slots"));
  }
  // A valid view's rows are small, so this count fits size_t; the memory may not be there.
  const size_t values = slots.size() * static_cast<size_t>(view.layout.RowsPerSlot()) *
                        static_cast<size_t>(view.layout.head_dim);
  std::vector<float> kv;
  try {
    kv.resize(values);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("no host memory for ", values, " dequantized K/V values"));
  }
  if (slots.empty()) return kv;
  DeviceBuffer device_slots, device_kv;
  RETURN_IF_ERROR(device_slots.Allocate(slots.size() * sizeof(int32_t), "the slots to dequantize"));
  RETURN_IF_ERROR(device_kv.Allocate(kv.size() * sizeof(float), "the dequantized K/V"));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(device_slots.get(), slots.data(), device_slots.bytes(),
                                       cudaMemcpyHostToDevice, stream));
  RETURN_IF_ERROR(DequantizeCuda(view, layer, device_slots.as<const int32_t>(),
                                 static_cast<int32_t>(slots.size()), device_kv.as<float>(),
                                 stream));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(kv.data(), device_kv.get(), device_kv.bytes(),
                                       cudaMemcpyDeviceToHost, stream));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return kv;
}

}  // namespace int4kv
