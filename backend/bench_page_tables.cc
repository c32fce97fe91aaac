#include "backend/bench_page_tables.h"

#include <algorithm>
#include <memory>
#include <numeric>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kv_cache/token_slot_allocator.h"

namespace int4kv {

std::vector<int32_t> BenchPageTableSlots(int64_t capacity, bool random_pages, int64_t window,
                                         std::mt19937& rng) {
  std::vector<int32_t> slots(static_cast<size_t>(capacity));
  std::iota(slots.begin(), slots.end(), 1);
  if (!random_pages) return slots;
  if (window <= 0 || window > capacity) window = capacity;
  for (int64_t begin = 0; begin < capacity; begin += window) {
    const int64_t end = std::min(capacity, begin + window);
    std::shuffle(slots.begin() + begin, slots.begin() + end, rng);
  }
  return slots;
}

void SortRowSlots(const std::vector<int>& lengths, int64_t run, std::vector<int32_t>& slots) {
  auto row = slots.begin();
  for (const int length : lengths) {
    const int64_t step = run > 0 ? run : length;
    for (int64_t begin = 0; begin < length; begin += step) {
      std::sort(row + begin, row + std::min<int64_t>(length, begin + step));
    }
    row += length;
  }
}

absl::StatusOr<std::vector<int32_t>> ServedPageTableSlots(const std::vector<int>& lengths,
                                                          int64_t capacity,
                                                          int64_t mean_request_tokens,
                                                          int64_t churn_requests,
                                                          std::mt19937& rng) {
  int64_t tokens = 0;
  for (size_t r = 0; r < lengths.size(); ++r) {
    if (lengths[r] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("lengths[", r, "] = ", lengths[r], " is negative"));
    }
    tokens += lengths[r];
  }
  if (capacity < tokens) {
    return absl::InvalidArgumentError(absl::StrCat("capacity = ", capacity, " is below the rows' ",
                                                   tokens, " tokens (sum of lengths)"));
  }
  if (mean_request_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("mean_request_tokens = ", mean_request_tokens, " must be >= 1"));
  }
  if (churn_requests < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("churn_requests = ", churn_requests, " must be >= 0"));
  }
  absl::StatusOr<std::unique_ptr<TokenSlotAllocator>> allocator =
      TokenSlotAllocator::Create(capacity);
  if (!allocator.ok()) return allocator.status();
  TokenSlotAllocator& slots = **allocator;

  // Sizes up to 2 * mean - 1, and no larger than the pool (checked first: 2 * mean may overflow).
  const int64_t largest_request =
      mean_request_tokens > capacity ? capacity : std::min(capacity, 2 * mean_request_tokens - 1);
  std::uniform_int_distribution<int64_t> request_size(1, largest_request);
  std::vector<std::vector<int32_t>> running;  // each running request's reserved slots
  auto finish_one = [&] {                     // a random running request finishes
    const size_t i = std::uniform_int_distribution<size_t>(0, running.size() - 1)(rng);
    absl::Status freed = slots.Free(running[i]);
    std::swap(running[i], running.back());
    running.pop_back();
    return freed;
  };
  for (int64_t i = 0; i < churn_requests; ++i) {
    const int64_t size = request_size(rng);
    while (slots.free_count() < size) {  // size <= capacity: ends once every request finished
      if (absl::Status freed = finish_one(); !freed.ok()) return freed;
    }
    running.emplace_back();
    if (absl::Status reserved = slots.Allocate(size, &running.back()); !reserved.ok()) {
      return reserved;
    }
  }
  while (!running.empty()) {
    if (absl::Status freed = finish_one(); !freed.ok()) return freed;
  }

  std::vector<int32_t> table;
  table.reserve(static_cast<size_t>(tokens));
  for (const int length : lengths) {
    if (absl::Status reserved = slots.Allocate(length, &table); !reserved.ok()) return reserved;
  }
  return table;
}

}  // namespace int4kv
