#include "kv_cache/token_slot_allocator.h"

#include <new>

#include "absl/strings/str_cat.h"
#include "kv_cache/kv_cache_config.h"

namespace int4kv {

int64_t TokenSlotAllocator::HostBytes(int64_t capacity) {
  return capacity * static_cast<int64_t>(sizeof(int32_t)) + (capacity + 1);
}

absl::StatusOr<std::unique_ptr<TokenSlotAllocator>> TokenSlotAllocator::Create(int64_t capacity) {
  // A slot id past kMaxCapacitySlots would not fit in int32.
  if (capacity < 1 || capacity > kMaxCapacitySlots) {
    return absl::InvalidArgumentError(absl::StrCat("TokenSlotAllocator capacity = ", capacity,
                                                   " is invalid: must be in [1, ",
                                                   kMaxCapacitySlots, "] (kMaxCapacitySlots)"));
  }
  try {
    return std::unique_ptr<TokenSlotAllocator>(new TokenSlotAllocator(capacity));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot allocate ", HostBytes(capacity),
        " bytes of host memory for the token slot allocator (capacity = ", capacity, ")"));
  }
}

TokenSlotAllocator::TokenSlotAllocator(int64_t capacity)
    : capacity_(capacity), allocated_(static_cast<size_t>(capacity) + 1, 0) {
  free_list_.reserve(static_cast<size_t>(capacity));
  // Highest first, so slot 1 is handed out first (deterministic and easy to read in dumps).
  for (int64_t slot = capacity; slot >= 1; --slot) {
    free_list_.push_back(static_cast<int32_t>(slot));
  }
}

absl::Status TokenSlotAllocator::Allocate(int64_t count, std::vector<int32_t>* out) {
  if (count < 0) {
    return absl::InvalidArgumentError(absl::StrCat("slot count ", count, " is negative"));
  }
  if (out == nullptr) return absl::InvalidArgumentError("the slot list to append to is null");
  if (count > free_count()) {
    return absl::ResourceExhaustedError(absl::StrCat("requested ", count, " KV slots but only ",
                                                     free_count(), " of ", capacity_, " are free"));
  }
  try {
    out->reserve(out->size() + static_cast<size_t>(count));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate the list of ", count, " KV slots"));
  }
  for (int64_t i = 0; i < count; ++i) {
    const int32_t slot = free_list_.back();
    free_list_.pop_back();
    allocated_[slot] = 1;
    out->push_back(slot);
  }
  return absl::OkStatus();
}

absl::Status TokenSlotAllocator::Free(absl::Span<const int32_t> slots) {
  // Validate everything first, marking as we go so that a duplicate shows up as "not
  // allocated"; undo the marks on failure so that state is unchanged.
  for (size_t i = 0; i < slots.size(); ++i) {
    const int32_t slot = slots[i];
    absl::Status error;
    if (slot < 1 || slot > capacity_) {
      error = absl::InvalidArgumentError(
          absl::StrCat("slot ", slot, " (index ", i, ") is out of range [1, ", capacity_, "]"));
    } else if (!allocated_[slot]) {
      error = absl::InvalidArgumentError(absl::StrCat(
          "slot ", slot, " (index ", i, ") is not allocated: double free or duplicate"));
    }
    if (!error.ok()) {
      for (size_t j = 0; j < i; ++j) allocated_[slots[j]] = 1;
      return error;
    }
    allocated_[slot] = 0;
  }
  for (const int32_t slot : slots) free_list_.push_back(slot);
  return absl::OkStatus();
}

bool TokenSlotAllocator::IsAllocated(int32_t slot) const {
  return slot >= 1 && slot <= capacity_ && allocated_[slot] != 0;
}

}  // namespace int4kv
