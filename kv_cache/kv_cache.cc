#include "kv_cache/kv_cache.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
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
  RETURN_IF_ERROR(ValidateMemoryKind(kind));
  // The host bookkeeping comes before the pools, so that a failure there is reported before
  // any device memory is taken. Validate has checked every argument, so the only error left
  // is host memory, which is reported with the config fields that size it.
  absl::StatusOr<std::unique_ptr<TokenSlotAllocator>> slots =
      TokenSlotAllocator::Create(config.capacity_slots);
  if (!slots.ok()) {
    if (!absl::IsResourceExhausted(slots.status())) return slots.status();
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot allocate ", TokenSlotAllocator::HostBytes(config.capacity_slots),
        " bytes of host memory for the token slot allocator (KvCacheConfig.capacity_slots = ",
        config.capacity_slots, ")"));
  }
  absl::StatusOr<std::unique_ptr<RequestTable>> requests =
      RequestTable::Create(config.max_requests, config.max_seq_len, config.capacity_slots + 1);
  if (!requests.ok()) {
    if (!absl::IsResourceExhausted(requests.status())) return requests.status();
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot allocate ", RequestTable::HostBytes(config.max_requests, config.max_seq_len),
        " bytes of host memory for the request table (KvCacheConfig.max_requests = ",
        config.max_requests, ", max_seq_len = ", config.max_seq_len, ")"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<KvPool> pool, CreateKvPool(config, kind));
  std::unique_ptr<KvCache> cache(
      new KvCache(config, std::move(pool), *std::move(slots), *std::move(requests)));
  if (kind == MemoryKind::kDevice) RETURN_IF_ERROR(cache->requests_->EnableDeviceMirror());
  return cache;
}

absl::Status KvCache::AppendNewSlots(int32_t request, int64_t count,
                                     std::vector<int32_t>* new_slots) {
  // The request is checked first, so that an append that could never succeed says why rather
  // than ResourceExhausted, which a scheduler may answer by evicting other requests.
  RETURN_IF_ERROR(requests_->CheckAppend(request, count));
  std::vector<int32_t> allocated;
  RETURN_IF_ERROR(slots_->Allocate(count, &allocated));
  if (absl::Status status = requests_->Append(request, allocated); !status.ok()) {
    // Pushed back in reverse, the slots leave the free list exactly as Allocate found it.
    std::reverse(allocated.begin(), allocated.end());
    RETURN_IF_ERROR(slots_->Free(allocated));
    return status;
  }
  if (new_slots != nullptr) {
    new_slots->insert(new_slots->end(), allocated.begin(), allocated.end());
  }
  return absl::OkStatus();
}

absl::Status KvCache::AppendSharedSlots(int32_t request, absl::Span<const int32_t> slots) {
  RETURN_IF_ERROR(requests_->CheckAppend(request, static_cast<int64_t>(slots.size())));
  RETURN_IF_ERROR(slots_->Share(slots));
  // Cannot fail: Append checks the request, the length and that each slot lies in the pool,
  // which CheckAppend and Share have checked.
  return requests_->Append(request, slots);
}

absl::StatusOr<int32_t> KvCache::ForkRequest(int32_t parent, int32_t prefix_tokens) {
  RETURN_IF_ERROR(requests_->CheckAppend(parent, 0));  // in range and live
  const int32_t parent_length = requests_->Length(parent);
  if (prefix_tokens < 0 || prefix_tokens > parent_length) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefix_tokens = ", prefix_tokens, " to fork request ", parent,
                     " is invalid: must be in [0, ", parent_length, "] (its tokens)"));
  }
  // The holds come before the row, so that a failure leaves the table's ring of free rows as
  // it was (a row claimed and given back would move to the ring's end). The parent's row lives
  // in the table, which nothing below moves.
  const absl::Span<const int32_t> prefix = requests_->Tokens(parent).subspan(0, prefix_tokens);
  RETURN_IF_ERROR(slots_->Share(prefix));
  absl::StatusOr<int32_t> child = requests_->AllocateRequest();
  if (!child.ok()) {
    RETURN_IF_ERROR(slots_->Free(prefix));  // each slot keeps a holder: none is freed
    return child.status();
  }
  // Cannot fail: the row is new and live, the prefix fits max_seq_len and lies in the pool.
  RETURN_IF_ERROR(requests_->Append(*child, prefix));
  return *child;
}

absl::Status KvCache::TruncateRequest(int32_t request, int32_t length) {
  RETURN_IF_ERROR(requests_->CheckTruncate(request, length));
  RETURN_IF_ERROR(slots_->Free(requests_->Tokens(request).subspan(length)));
  return requests_->Truncate(request, length);  // checked above: cannot fail
}

absl::Status KvCache::ReleaseRequest(int32_t request) {
  // A row not in use has no tokens, so nothing is freed and FreeRequest reports it.
  RETURN_IF_ERROR(slots_->Free(requests_->Tokens(request)));
  return requests_->FreeRequest(request);
}

}  // namespace int4kv
