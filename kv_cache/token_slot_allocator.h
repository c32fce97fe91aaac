// Hands out KV token slots 1..capacity (slot 0 is reserved for padded rows) and counts each
// slot's holders: Allocate hands a slot out with one, Share adds one (a second request row
// reading a shared prefix, a prefix cache keeping it), Free drops one, and a slot returns to
// the free list when its last holder frees it.
//
// Thread ownership: not thread-safe. In the server it belongs to the engine's scheduler
// thread, which is the only thread that allocates or frees slots.
#ifndef INT4KV_KV_CACHE_TOKEN_SLOT_ALLOCATOR_H_
#define INT4KV_KV_CACHE_TOKEN_SLOT_ALLOCATOR_H_

#include <cstdint>
#include <limits>
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
  // and the holder counts (uint16 a slot, plus slot 0).
  static int64_t HostBytes(int64_t capacity);

  // Appends `count` slots to `out`, all or nothing: when fewer than `count` are free, returns
  // ResourceExhausted (with the requested and free counts) and changes nothing; a negative
  // count or a null `out` gives InvalidArgument. O(1) a slot.
  absl::Status Allocate(int64_t count, std::vector<int32_t>* out);

  // Adds a holder to each of `slots` (a slot listed n times gains n), all or nothing: a slot
  // out of [1, capacity] or not allocated gives InvalidArgument, one that would pass
  // kMaxSlotHolders holders ResourceExhausted, and nothing changes. O(1) a slot.
  absl::Status Share(absl::Span<const int32_t> slots);

  // Drops a holder from each of `slots` (a slot listed n times loses n), returning a slot to
  // the free list when its last holder goes; all or nothing: a slot out of [1, capacity], one
  // not allocated (a double free), or one listed more times than it has holders gives
  // InvalidArgument naming it, and nothing changes.
  absl::Status Free(absl::Span<const int32_t> slots);

  bool IsAllocated(int32_t slot) const;
  // How many hold `slot`: 0 when free (or out of range), 1 after Allocate, +1 a Share.
  int32_t Holders(int32_t slot) const;
  int64_t capacity() const { return capacity_; }
  int64_t free_count() const { return static_cast<int64_t>(free_list_.size()); }
  int64_t used_count() const { return capacity_ - free_count(); }

 private:
  explicit TokenSlotAllocator(int64_t capacity);  // capacity checked by Create; may throw
  // InvalidArgument naming `slot` (the `index`th listed) when it is outside [1, capacity].
  absl::Status CheckInRange(int32_t slot, size_t index) const;

  int64_t capacity_;
  // Stack of free slots; top is handed out next. Its capacity is reserved for every slot, so
  // that Free never reallocates it.
  std::vector<int32_t> free_list_;
  std::vector<uint16_t> holders_;  // [capacity + 1]; 0 while the slot is free
};

// The most holders a slot can have (the largest count its uint16 holds): Share past it gives
// ResourceExhausted.
inline constexpr int32_t kMaxSlotHolders = 65535;
static_assert(kMaxSlotHolders == std::numeric_limits<uint16_t>::max(),
              "TokenSlotAllocator::holders_ counts in uint16");

}  // namespace int4kv

#endif  // INT4KV_KV_CACHE_TOKEN_SLOT_ALLOCATOR_H_
