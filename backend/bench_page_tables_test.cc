#include "backend/bench_page_tables.h"

#include <algorithm>
#include <numeric>

#include "gtest/gtest.h"

namespace int4kv {
namespace {

std::vector<int32_t> Ascending(int64_t capacity) {
  std::vector<int32_t> slots(static_cast<size_t>(capacity));
  std::iota(slots.begin(), slots.end(), 1);
  return slots;
}

TEST(BenchPageTableSlotsTest, ContiguousTablesAscend) {
  std::mt19937 rng(1);
  EXPECT_EQ(BenchPageTableSlots(1000, false, 0, rng), Ascending(1000));
  EXPECT_EQ(BenchPageTableSlots(1000, false, 64, rng), Ascending(1000));
}

TEST(BenchPageTableSlotsTest, RandomTablesPermuteThePool) {
  std::mt19937 rng(1);
  std::vector<int32_t> slots = BenchPageTableSlots(1000, true, 0, rng);
  // Spread over the whole pool: the first tenth of the table reaches the last tenth of slots.
  EXPECT_TRUE(std::any_of(slots.begin(), slots.begin() + 100, [](int32_t s) { return s > 900; }));
  std::sort(slots.begin(), slots.end());
  EXPECT_EQ(slots, Ascending(1000));
}

TEST(BenchPageTableSlotsTest, WindowedTablesPermuteOnlyWithinEachWindow) {
  std::mt19937 rng(1);
  constexpr int64_t kCapacity = 1000, kWindow = 64;  // the last window is partial (40 slots)
  const std::vector<int32_t> slots = BenchPageTableSlots(kCapacity, true, kWindow, rng);
  ASSERT_EQ(slots.size(), static_cast<size_t>(kCapacity));
  int permuted_windows = 0;
  for (int64_t begin = 0; begin < kCapacity; begin += kWindow) {
    const int64_t end = std::min(kCapacity, begin + kWindow);
    std::vector<int32_t> window(slots.begin() + begin, slots.begin() + end);
    const bool in_order = std::is_sorted(window.begin(), window.end());
    permuted_windows += in_order ? 0 : 1;
    std::sort(window.begin(), window.end());
    for (int64_t i = begin; i < end; ++i) {
      ASSERT_EQ(window[i - begin], i + 1) << "window starting at index " << begin;
    }
  }
  EXPECT_EQ(permuted_windows, (kCapacity + kWindow - 1) / kWindow);
}

TEST(BenchPageTableSlotsTest, AWindowAsLargeAsThePoolIsTheWholePool) {
  std::mt19937 whole_rng(5), window_rng(5);
  EXPECT_EQ(BenchPageTableSlots(300, true, 0, whole_rng),
            BenchPageTableSlots(300, true, 5000, window_rng));
}

// Rows of 5, 0 and 7 tokens over 14 slots (the last 2 taken by no row), sorted in runs of 3.
TEST(SortRowSlotsTest, SortsEachRunOfEachRowAndNothingElse) {
  std::vector<int32_t> slots = {9, 4, 1, 8, 2, 14, 3, 13, 5, 12, 6, 11, 10, 7};
  SortRowSlots({5, 0, 7}, 3, slots);
  // Row 0: runs {9, 4, 1} and {8, 2}; row 1 none; row 2: {14, 3, 13}, {5, 12, 6}, {11}.
  EXPECT_EQ(slots, (std::vector<int32_t>{1, 4, 9, 2, 8, 3, 13, 14, 5, 6, 12, 11, 10, 7}));
}

TEST(SortRowSlotsTest, RunZeroSortsWholeRowsOfARandomTable) {
  std::mt19937 rng(3);
  const std::vector<int> lengths = {300, 1, 450, 249};
  const std::vector<int32_t> random = BenchPageTableSlots(1000, true, 0, rng);
  std::vector<int32_t> sorted = random;
  SortRowSlots(lengths, 0, sorted);
  auto row = sorted.begin();
  auto original = random.begin();
  for (const int length : lengths) {
    EXPECT_TRUE(std::is_sorted(row, row + length));
    EXPECT_TRUE(std::is_permutation(row, row + length, original));
    row += length;
    original += length;
  }
  EXPECT_FALSE(std::is_sorted(sorted.begin(), sorted.end())) << "rows sorted across each other";
}

}  // namespace
}  // namespace int4kv
