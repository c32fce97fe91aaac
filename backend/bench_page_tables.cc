#include "backend/bench_page_tables.h"

#include <algorithm>
#include <numeric>

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

}  // namespace int4kv
