#include "kv_cache/kv_cache.h"

#include "common/status_macros.h"

namespace int4kv {

KvCache::KvCache(const KvCacheConfig& config, std::unique_ptr<KvPool> pool)
    : config_(config),
      pool_(std::move(pool)),
      slots_(config.capacity_slots),
      requests_(config.max_requests, config.max_seq_len) {}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(const KvCacheConfig& config,
                                                         MemoryKind kind) {
  RETURN_IF_ERROR(config.Validate());
  ASSIGN_OR_RETURN(std::unique_ptr<KvPool> pool, CreateKvPool(config, kind));
  std::unique_ptr<KvCache> cache(new KvCache(config, std::move(pool)));
  if (kind == MemoryKind::kDevice) RETURN_IF_ERROR(cache->requests_.EnableDeviceMirror());
  return cache;
}

}  // namespace int4kv
