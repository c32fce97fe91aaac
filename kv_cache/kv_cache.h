// One paged INT4 KV cache: its config, its pools, its slot allocator and its request table.
// kv_cache/ owns every KV byte and the req_to_token table; nobody else allocates slots.
//
// Thread ownership: not thread-safe. In the server the engine's scheduler thread owns it.
#ifndef INT4KV_KV_CACHE_KV_CACHE_H_
#define INT4KV_KV_CACHE_KV_CACHE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kv_cache/kv_cache_config.h"
#include "kv_cache/kv_pool.h"
#include "kv_cache/request_table.h"
#include "kv_cache/token_slot_allocator.h"

namespace int4kv {

class KvCache {
 public:
  // Validates `config`, allocates the slot allocator and the request table in host memory,
  // the pools in `kind` memory and, for device memory, the request table's device mirror.
  // Host memory that cannot be allocated gives ResourceExhausted naming the structure and the
  // config fields that size it.
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(const KvCacheConfig& config,
                                                         MemoryKind kind);

  const KvCacheConfig& config() const { return config_; }
  const KvCacheView& view() const { return pool_->view(); }
  MemoryKind memory_kind() const { return pool_->memory_kind(); }
  TokenSlotAllocator& slots() { return *slots_; }
  const TokenSlotAllocator& slots() const { return *slots_; }
  RequestTable& requests() { return *requests_; }
  const RequestTable& requests() const { return *requests_; }

  // Allocates `count` slots and appends them to live request `request`'s row, all or nothing:
  // when the request is not live (FailedPrecondition; out of range: InvalidArgument), its row
  // would pass max_seq_len (OutOfRange) or the slots are not free (ResourceExhausted, only
  // for an append the request could take), the allocator and the table stay as they were. On
  // success the new slots are also appended to `new_slots` (when not null), in the row's order.
  absl::Status AppendNewSlots(int32_t request, int64_t count, std::vector<int32_t>* new_slots);

  // Appends slots that are already allocated (a prefix whose K/V another row or a prefix
  // cache holds) to live request `request`'s row, as one more holder of each
  // (TokenSlotAllocator::Share), all or nothing. Errors, checked in this order, and nothing
  // changes on any: those of RequestTable::CheckAppend for the request and the count
  // (InvalidArgument out of range, FailedPrecondition not live, OutOfRange past max_seq_len),
  // then those of Share for the slots (InvalidArgument outside [1, capacity] or not allocated,
  // ResourceExhausted at kMaxSlotHolders holders). The row then releases them as its own: a
  // slot goes back to the allocator when its last holder lets it go.
  absl::Status AppendSharedSlots(int32_t request, absl::Span<const int32_t> slots);
  // A new request whose row starts with the first `prefix_tokens` slots of live request
  // `parent` (parallel samples or beams of one prompt, a branch of a conversation), sharing
  // them as AppendSharedSlots does; its own tokens go on with AppendNewSlots. Errors, checked
  // in this order, and nothing changes on any (the next AllocateRequest gets the row it would
  // have got): a parent checked as RequestTable::CheckAppend checks a request (InvalidArgument
  // out of range, FailedPrecondition not live), InvalidArgument for a prefix_tokens outside
  // [0, the parent's length], then Share's errors for the first prefix slot at fault
  // (InvalidArgument for one the allocator did not hand out, appended through requests()
  // directly; ResourceExhausted for one at kMaxSlotHolders holders), then ResourceExhausted
  // from AllocateRequest when no row is free.
  absl::StatusOr<int32_t> ForkRequest(int32_t parent, int32_t prefix_tokens);

  // Lets go of every slot in a live request's row (TokenSlotAllocator::Free: a slot other rows
  // or a prefix cache still hold stays allocated), then frees the row. All or nothing: a row
  // holding a slot the allocator did not hand out (one appended through requests() directly)
  // gives InvalidArgument, and neither the slots nor the row are freed. Rows that share slots
  // must share them through AppendSharedSlots or ForkRequest (or slots().Share): a slot that
  // two rows hold with one holder is freed by the first row released while the other still
  // reads it. A released id is reused by a later AllocateRequest
  // (RequestTable::AllocateRequest).
  absl::Status ReleaseRequest(int32_t request);
  // Drops a live request's tokens past its first `length` and lets go of their slots
  // (speculative tokens that were rejected): RequestTable::Truncate, then the slots back to
  // the allocator as ReleaseRequest does. All or nothing, as ReleaseRequest: a bad length
  // (RequestTable::CheckTruncate) or a dropped slot the allocator did not hand out gives an
  // error and nothing changes.
  absl::Status TruncateRequest(int32_t request, int32_t length);

 private:
  KvCache(const KvCacheConfig& config, std::unique_ptr<KvPool> pool,
          std::unique_ptr<TokenSlotAllocator> slots, std::unique_ptr<RequestTable> requests);

  KvCacheConfig config_;
  // Owned and never null. Create builds each one separately, so that a failed host
  // allocation can say which one did not fit.
  std::unique_ptr<KvPool> pool_;
  std::unique_ptr<TokenSlotAllocator> slots_;
  std::unique_ptr<RequestTable> requests_;
};

}  // namespace int4kv

#endif  // INT4KV_KV_CACHE_KV_CACHE_H_
