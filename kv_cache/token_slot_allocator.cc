#include "kv_cache/token_slot_allocator.h"

#include <algorithm>
#include <new>

#include "absl/strings/str_cat.h"
#include "kv_cache/kv_cache_config.h"

namespace int4kv {

int64_t TokenSlotAllocator::HostBytes(int64_t capacity) {
  return capacity * static_cast<int64_t>(sizeof(int32_t)) +
         (capacity + 1) * static_cast<int64_t>(sizeof(uint16_t));
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
    : capacity_(capacity), holders_(static_cast<size_t>(capacity) + 1, 0) {
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
    holders_[slot] = 1;
    out->push_back(slot);
  }
  return absl::OkStatus();
}

absl::Status TokenSlotAllocator::Share(absl::Span<const int32_t> slots) {
  // Adds as it checks, so that a slot listed twice counts twice against the limit; on an
  // error the additions so far are taken back.
  for (size_t i = 0; i < slots.size(); ++i) {
    const int32_t slot = slots[i];
    absl::Status error = CheckInRange(slot, i);
    if (error.ok() && holders_[slot] == 0) {
      error = absl::InvalidArgumentError(absl::StrCat(
          "slot ", slot, " (index ", i, ") is not allocated: only a held slot is shared"));
    } else if (error.ok() && holders_[slot] >= kMaxSlotHolders) {
      error =
          absl::ResourceExhaustedError(absl::StrCat("slot ", slot, " (index ", i, ") already has ",
                                                    kMaxSlotHolders, " holders (kMaxSlotHolders)"));
    }
    if (!error.ok()) {
      for (size_t j = 0; j < i; ++j) --holders_[slots[j]];
      return error;
    }
    ++holders_[slot];
  }
  return absl::OkStatus();
}

absl::Status TokenSlotAllocator::Free(absl::Span<const int32_t> slots) {
  const auto holder_word = [](int64_t n) { return n == 1 ? " holder" : " holders"; };
  // Drops as it checks, so that a slot listed more times than it has holders runs out of
  // them at its extra listing, and pushes each slot whose last holder goes; the free list's
  // reserved capacity holds every slot, so the pushes cannot fail. On an error both are taken
  // back.
  const size_t free_before = free_list_.size();
  for (size_t i = 0; i < slots.size(); ++i) {
    const int32_t slot = slots[i];
    absl::Status error = CheckInRange(slot, i);
    if (error.ok() && holders_[slot] == 0) {
      // Each earlier listing of the slot in this call took one of the holders it had.
      const int64_t holders = std::count(slots.begin(), slots.begin() + i, slot);
      error = absl::InvalidArgumentError(
          holders == 0
              ? absl::StrCat("slot ", slot, " (index ", i,
                             ") is not allocated: a double free, or never handed out")
              : absl::StrCat("slot ", slot, " (index ", i, ") is listed more times than its ",
                             holders, holder_word(holders)));
    }
    if (!error.ok()) {
      for (size_t j = 0; j < i; ++j) ++holders_[slots[j]];
      free_list_.resize(free_before);
      return error;
    }
    if (--holders_[slot] == 0) free_list_.push_back(slot);
  }
  return absl::OkStatus();
}

bool TokenSlotAllocator::IsAllocated(int32_t slot) const { return Holders(slot) > 0; }

absl::Status TokenSlotAllocator::CheckInRange(int32_t slot, size_t index) const {
  if (slot >= 1 && slot <= capacity_) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("slot ", slot, " (index ", index, ") is out of range [1, ", capacity_, "]"));
}

int32_t TokenSlotAllocator::Holders(int32_t slot) const {
  return slot >= 1 && slot <= capacity_ ? holders_[slot] : 0;
}

}  // namespace int4kv
