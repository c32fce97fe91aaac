// The memory behind one KV cache: the packed code pool, the scale pool and (asymmetric) the
// zero-point pool, in host memory (CPU path) or device memory (CUDA path). Each pool is one
// allocation made at creation and zero-filled, so an unwritten slot dequantizes to zeros.
//
// Ownership: a KvPool owns its memory; kernels and backends get the non-owning view().
#ifndef INT4KV_KV_CACHE_KV_POOL_H_
#define INT4KV_KV_CACHE_KV_POOL_H_

#include <memory>

#include "absl/status/statusor.h"
#include "kv_cache/int4_layout.h"
#include "kv_cache/kv_cache_config.h"

namespace int4kv {

enum class MemoryKind { kHost = 0, kDevice = 1 };

class KvPool {
 public:
  virtual ~KvPool() = default;
  const KvCacheView& view() const { return view_; }
  MemoryKind memory_kind() const { return memory_kind_; }

 protected:
  KvPool(const KvCacheView& view, MemoryKind kind) : view_(view), memory_kind_(kind) {}
  KvCacheView& mutable_view() { return view_; }

 private:
  KvCacheView view_;
  MemoryKind memory_kind_;
};

// InvalidArgument naming the value unless `kind` is kHost or kDevice (an enum cast from a
// caller's integer can be neither).
absl::Status ValidateMemoryKind(MemoryKind kind);

// `config` and `kind` must be valid. Device pools need a CUDA device (error otherwise).
absl::StatusOr<std::unique_ptr<KvPool>> CreateKvPool(const KvCacheConfig& config, MemoryKind kind);

}  // namespace int4kv

#endif  // INT4KV_KV_CACHE_KV_POOL_H_
