// Hands out KV token slots 1..capacity (slot 0 is reserved for padded rows).
//
// Thread ownership: not thread-safe. In the server it belongs to the engine's scheduler
// thread, which is the only thread that allocates or frees slots.
#ifndef INT4KV_KV_CACHE_TOKEN_SLOT_ALLOCATOR_H_
#define INT4KV_KV_CACHE_TOKEN_SLOT_ALLOCATOR_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace int4kv {

class TokenSlotAllocator {
 public:
  // An allocator whose slots 1..capacity are free. A capacity outside [1, kMaxCapacitySlots]
  // (kv_cache_config.h) gives InvalidArgument naming the limit, before anything is allocated;
  // HostBytes(capacity) that cannot be allocated gives ResourceExhausted with the byte count.
  static absl::StatusOr<std::unique_ptr<TokenSlotAllocator>> Create(int64_t capacity);

  // Host bytes the constructor allocates for `capacity` slots: the free list (int32 a slot)
  // and the allocated flags (a byte a slot, plus slot 0).
  static int64_t HostBytes(int64_t capacity);

  // Appends `count` slots to `out`, all or nothing: when fewer than `count` are free, returns
  // ResourceExhausted (with the requested and free counts) and changes nothing; a negative
  // count or a null `out` gives InvalidArgument. O(1) a slot.
  absl::Status Allocate(int64_t count, std::vector<int32_t>* out);

  // Returns `slots` to the free list, all or nothing: a slot out of [1, capacity], one that is
  // not allocated, or one listed twice gives InvalidArgument and changes nothing.
  absl::Status Free(absl::Span<const int32_t> slots);

  bool IsAllocated(int32_t slot) const;
  int64_t capacity() const { return capacity_; }
  int64_t free_count() const { return static_cast<int64_t>(free_list_.size()); }
  int64_t used_count() const { return capacity_ - free_count(); }

 private:
  explicit TokenSlotAllocator(int64_t capacity);  // capacity checked by Create; may throw

  int64_t capacity_;
  std::vector<int32_t> free_list_;  // stack of free slots; top is handed out next
  std::vector<uint8_t> allocated_;  // [capacity + 1], 1 while the slot is handed out
};

}  // namespace int4kv

#endif  // INT4KV_KV_CACHE_TOKEN_SLOT_ALLOCATOR_H_
