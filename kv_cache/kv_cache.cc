#include "kv_cache/kv_cache.h"

#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace int4kv {

KvCache::KvCache(const KvCacheConfig& config, std::unique_ptr<KvPool> pool,
                 std::unique_ptr<TokenSlotAllocator> slots, std::unique_ptr<RequestTable> requests)
    : config_(config),
      pool_(std::move(pool)),
      slots_(std::move(slots)),
      requests_(std::move(requests)) {}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(const KvCacheConfig& config,
                                                         MemoryKind kind) {
  RETURN_IF_ERROR(config.Validate());
  // The host bookkeeping comes before the pools, so that a failure there is reported before
  // any device memory is taken.
  std::unique_ptr<TokenSlotAllocator> slots;
  try {
    slots = std::make_unique<TokenSlotAllocator>(config.capacity_slots);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot allocate ", TokenSlotAllocator::HostBytes(config.capacity_slots),
        " bytes of host memory for the token slot allocator (KvCacheConfig.capacity_slots = ",
        config.capacity_slots, ")"));
  }
  std::unique_ptr<RequestTable> requests;
  try {
    requests = std::make_unique<RequestTable>(config.max_requests, config.max_seq_len,
                                              config.capacity_slots + 1);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot allocate ", RequestTable::HostBytes(config.max_requests, config.max_seq_len),
        " bytes of host memory for the request table (KvCacheConfig.max_requests = ",
        config.max_requests, ", max_seq_len = ", config.max_seq_len, ")"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<KvPool> pool, CreateKvPool(config, kind));
  std::unique_ptr<KvCache> cache(
      new KvCache(config, std::move(pool), std::move(slots), std::move(requests)));
  if (kind == MemoryKind::kDevice) RETURN_IF_ERROR(cache->requests_->EnableDeviceMirror());
  return cache;
}

}  // namespace int4kv
