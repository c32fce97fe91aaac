#include "kv_cache/kv_pool.h"

#include <cuda_runtime_api.h>

#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/cuda_check.h"
#include "common/status_macros.h"

namespace int4kv {
namespace {

// The KvCacheConfig fields that size the pools, for allocation errors.
std::string PoolSizeFields(const KvCacheConfig& config) {
  return absl::StrCat("KvCacheConfig.num_layers = ", config.num_layers,
                      ", kv_heads = ", config.kv_heads, ", head_dim = ", config.head_dim,
                      ", group_size = ", config.group_size,
                      ", quant_mode = ", QuantModeName(config.quant_mode),
                      ", capacity_slots = ", config.capacity_slots);
}

KvCacheView MakeView(const KvCacheConfig& config) {
  KvCacheView view;
  view.layout = config.Layout();
  view.param_dtype = config.param_dtype;
  view.quant_mode = config.quant_mode;
  return view;
}

class HostKvPool : public KvPool {
 public:
  HostKvPool(const KvCacheView& view, std::vector<uint8_t> data, std::vector<uint16_t> scales,
             std::vector<uint16_t> zeros)
      : KvPool(WithPointers(view, data, scales, zeros), MemoryKind::kHost),
        data_(std::move(data)),
        scales_(std::move(scales)),
        zeros_(std::move(zeros)) {}

 private:
  // Vector buffers do not move when the vectors are moved, so these pointers stay valid.
  static KvCacheView WithPointers(KvCacheView view, std::vector<uint8_t>& data,
                                  std::vector<uint16_t>& scales, std::vector<uint16_t>& zeros) {
    view.data = data.data();
    view.scales = scales.data();
    view.zeros = zeros.empty() ? nullptr : zeros.data();
    return view;
  }

  std::vector<uint8_t> data_;
  std::vector<uint16_t> scales_;
  std::vector<uint16_t> zeros_;
};

class DeviceKvPool : public KvPool {
 public:
  ~DeviceKvPool() override {
    cudaFree(view().data);
    cudaFree(view().scales);
    cudaFree(view().zeros);
  }

  static absl::StatusOr<std::unique_ptr<KvPool>> Create(const KvCacheConfig& config) {
    if (CudaDeviceCount() == 0) {
      return absl::FailedPreconditionError("a device KV pool needs a CUDA device; none found");
    }
    // The pool owns each pointer as soon as it exists, so a failed later allocation frees
    // the earlier ones.
    std::unique_ptr<DeviceKvPool> pool(new DeviceKvPool(MakeView(config)));
    KvCacheView& view = pool->mutable_view();
    const size_t param_bytes = static_cast<size_t>(view.layout.ParamPoolElements()) * 2;
    RETURN_IF_ERROR(DeviceAlloc(config, static_cast<size_t>(view.layout.DataPoolBytes()),
                                reinterpret_cast<void**>(&view.data)));
    RETURN_IF_ERROR(DeviceAlloc(config, param_bytes, reinterpret_cast<void**>(&view.scales)));
    if (config.quant_mode == QuantMode::kAsymmetric) {
      RETURN_IF_ERROR(DeviceAlloc(config, param_bytes, reinterpret_cast<void**>(&view.zeros)));
    }
    // The zero fills run on the legacy default stream, which a stream created with
    // cudaStreamNonBlocking does not wait for: they are done before the pool is handed out.
    CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
    return std::unique_ptr<KvPool>(std::move(pool));
  }

 private:
  explicit DeviceKvPool(const KvCacheView& view) : KvPool(view, MemoryKind::kDevice) {}

  static absl::Status DeviceAlloc(const KvCacheConfig& config, size_t bytes, void** out) {
    // On failure *out is null, so the pool frees only what it holds.
    RETURN_IF_ERROR(CudaAllocate(out, bytes, /*pinned_host=*/false,
                                 absl::StrCat("the KV pools (", config.PoolBytes(), " in all; ",
                                              PoolSizeFields(config), ")")));
    CUDA_RETURN_IF_ERROR(cudaMemset(*out, 0, bytes));
    return absl::OkStatus();
  }
};

absl::StatusOr<std::unique_ptr<KvPool>> CreateHostPool(const KvCacheConfig& config) {
  KvCacheView view = MakeView(config);
  const KvLayout& layout = view.layout;
  try {
    std::vector<uint8_t> data(static_cast<size_t>(layout.DataPoolBytes()), 0);
    std::vector<uint16_t> scales(static_cast<size_t>(layout.ParamPoolElements()), 0);
    std::vector<uint16_t> zeros;
    if (config.quant_mode == QuantMode::kAsymmetric) {
      zeros.assign(static_cast<size_t>(layout.ParamPoolElements()), 0);
    }
    return std::unique_ptr<KvPool>(
        new HostKvPool(view, std::move(data), std::move(scales), std::move(zeros)));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", config.PoolBytes(),
                                                     " bytes of host memory for the KV pools (",
                                                     PoolSizeFields(config), ")"));
  }
}

}  // namespace

absl::Status ValidateMemoryKind(MemoryKind kind) {
  if (kind == MemoryKind::kHost || kind == MemoryKind::kDevice) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("MemoryKind = ", static_cast<int>(kind),
                                                 " is invalid: must be kHost (0) or kDevice (1)"));
}

absl::StatusOr<std::unique_ptr<KvPool>> CreateKvPool(const KvCacheConfig& config, MemoryKind kind) {
  RETURN_IF_ERROR(config.Validate());
  RETURN_IF_ERROR(ValidateMemoryKind(kind));
  return kind == MemoryKind::kHost ? CreateHostPool(config) : DeviceKvPool::Create(config);
}

}  // namespace int4kv
