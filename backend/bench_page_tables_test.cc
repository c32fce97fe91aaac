#include "backend/bench_page_tables.h"

#include <algorithm>
#include <cstdlib>
#include <numeric>

#include "absl/status/status.h"
#include "gmock/gmock.h"
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

// Maximal runs of consecutive slots (each next slot one above or one below) in one row.
int64_t CountRuns(const int32_t* row, int64_t length) {
  int64_t runs = length > 0 ? 1 : 0;
  for (int64_t i = 1; i < length; ++i) {
    if (std::abs(row[i] - row[i - 1]) != 1) ++runs;
  }
  return runs;
}

TEST(ServedPageTableSlotsTest, AFreshPoolHandsOutAscendingSlotsFromOne) {
  std::mt19937 rng(2);
  const absl::StatusOr<std::vector<int32_t>> table = ServedPageTableSlots(
      {100, 0, 28}, 200, /*mean_request_tokens=*/16, /*churn_requests=*/0, rng);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(*table, Ascending(128));
}

TEST(ServedPageTableSlotsTest, ChurnedRowsTakeDistinctSlotsInLongRuns) {
  const std::vector<int> lengths = {4096, 4096, 1000, 0, 3000};
  constexpr int64_t kCapacity = 16384, kMeanRequest = 256;
  std::mt19937 rng(4);
  const absl::StatusOr<std::vector<int32_t>> table =
      ServedPageTableSlots(lengths, kCapacity, kMeanRequest, /*churn_requests=*/400, rng);
  ASSERT_TRUE(table.ok()) << table.status();
  ASSERT_EQ(table->size(), 12192u);
  std::vector<int32_t> sorted = *table;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end()) << "a slot twice";
  EXPECT_GE(sorted.front(), 1);
  EXPECT_LE(sorted.back(), kCapacity);
  // The churn moved the rows off the fresh pool's order and over the whole pool ...
  EXPECT_NE(*table, Ascending(12192));
  EXPECT_GT(sorted.back(), 12192);
  // ... in runs of consecutive slots, as the served requests left them: many a row, but far
  // longer than a random table's (whose runs are about one slot).
  const int32_t* row = table->data();
  for (size_t r = 0; r < lengths.size(); ++r) {
    const int64_t runs = CountRuns(row, lengths[r]);
    if (lengths[r] >= 1000) {
      EXPECT_GE(runs, 2) << "row " << r;
      EXPECT_GE(lengths[r] / runs, kMeanRequest / 8) << "row " << r << ": " << runs << " runs";
    }
    row += lengths[r];
  }
}

TEST(ServedPageTableSlotsTest, TheSameSeedGivesTheSameTable) {
  std::mt19937 first_rng(9), second_rng(9);
  const auto first = ServedPageTableSlots({500, 700}, 4000, 100, 200, first_rng);
  const auto second = ServedPageTableSlots({500, 700}, 4000, 100, 200, second_rng);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(*first, *second);
}

TEST(ServedPageTableSlotsTest, RequestsLargerThanThePoolAreCutToIt) {
  std::mt19937 rng(6);
  const auto table = ServedPageTableSlots({64, 64}, 256, int64_t{1} << 62, 20, rng);
  ASSERT_TRUE(table.ok()) << table.status();
  std::vector<int32_t> sorted = *table;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end()) << "a slot twice";
  EXPECT_GE(sorted.front(), 1);
  EXPECT_LE(sorted.back(), 256);
}

TEST(ServedPageTableSlotsTest, BadArgumentsAreNamed) {
  std::mt19937 rng(1);
  using ::testing::HasSubstr;
  const auto small_pool = ServedPageTableSlots({600, 500}, 1000, 100, 10, rng);
  EXPECT_EQ(small_pool.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(small_pool.status().message(), HasSubstr("capacity = 1000"));
  const auto negative = ServedPageTableSlots({10, -1}, 1000, 100, 10, rng);
  EXPECT_THAT(negative.status().message(), HasSubstr("lengths[1] = -1"));
  const auto no_mean = ServedPageTableSlots({10}, 1000, 0, 10, rng);
  EXPECT_THAT(no_mean.status().message(), HasSubstr("mean_request_tokens = 0"));
  const auto no_churn = ServedPageTableSlots({10}, 1000, 100, -1, rng);
  EXPECT_THAT(no_churn.status().message(), HasSubstr("churn_requests = -1"));
}

}  // namespace
}  // namespace int4kv
