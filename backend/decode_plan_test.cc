#include "backend/decode_plan.h"

#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace int4kv {
namespace {

// Every token of every row is covered exactly once, in order, by chunks of that row; the
// chunk count never exceeds the capacity; chunk boundaries are tile-aligned.
void ExpectValidPlan(const std::vector<DecodeRow>& rows, int32_t target) {
  DecodePlan plan;
  PlanDecode(rows, target, &plan);
  const int32_t capacity = ChunkCapacity(static_cast<int32_t>(rows.size()), target);
  ASSERT_EQ(static_cast<int32_t>(plan.chunks.size()), capacity);
  ASSERT_LE(plan.used_chunks, capacity);
  if (static_cast<int32_t>(rows.size()) < target) {
    ASSERT_LE(plan.used_chunks, target);
  }
  for (size_t b = 0; b < rows.size(); ++b) {
    const RowWork& work = plan.rows[b];
    int32_t covered = 0;
    for (int32_t c = work.first_chunk; c < work.first_chunk + work.num_chunks; ++c) {
      const ChunkWork& chunk = plan.chunks[c];
      ASSERT_EQ(chunk.row, static_cast<int32_t>(b));
      ASSERT_EQ(chunk.request, rows[b].request);
      ASSERT_EQ(chunk.begin, covered);
      ASSERT_GT(chunk.end, chunk.begin);
      ASSERT_EQ(chunk.begin % kChunkAlign, 0);
      covered = chunk.end;
    }
    ASSERT_EQ(covered, rows[b].seq_len) << "row " << b;
  }
  for (int32_t c = plan.used_chunks; c < capacity; ++c) {
    ASSERT_EQ(plan.chunks[c].end, plan.chunks[c].begin);
  }
}

TEST(DecodePlanTest, CoversEveryTokenOnceWithinCapacity) {
  std::mt19937 rng(1);
  for (int trial = 0; trial < 2000; ++trial) {
    const int batch = 1 + rng() % 64;
    const int32_t target = 1 + rng() % 600;
    const int max_len = trial % 3 == 0 ? 70000 : 600;
    std::vector<DecodeRow> rows(batch);
    for (int b = 0; b < batch; ++b) {
      rows[b] = {static_cast<int32_t>(rng() % 100),
                 rng() % 5 == 0 ? 0 : static_cast<int32_t>(rng() % max_len)};
    }
    ExpectValidPlan(rows, target);
  }
}

TEST(DecodePlanTest, SplitsALongSingleRowAcrossTheTarget) {
  DecodePlan plan;
  PlanDecode(std::vector<DecodeRow>{{3, 65536}}, 65, &plan);
  EXPECT_EQ(plan.used_chunks, 64);
  EXPECT_EQ(plan.chunks[0].end - plan.chunks[0].begin, 1024);
  // 16 rows of 16384 on 264 slots: 16 chunks of 1024 each, one wave (not 17 and a tail).
  PlanDecode(std::vector<DecodeRow>(16, DecodeRow{0, 16384}), 264, &plan);
  EXPECT_EQ(plan.used_chunks, 256);
  EXPECT_EQ(plan.total_tokens, 16 * 16384);
  // A row of at most kShortRowTokens takes 32-token chunks (32, 32, 32, 4); a longer row
  // 64-token ones.
  PlanDecode(std::vector<DecodeRow>{{3, 100}}, 64, &plan);
  EXPECT_EQ(plan.used_chunks, 4);
  EXPECT_EQ(plan.chunks[0].end - plan.chunks[0].begin, kShortRowChunkTokens);
  PlanDecode(std::vector<DecodeRow>{{3, kShortRowTokens + 1}}, 264, &plan);
  EXPECT_EQ(plan.chunks[0].end - plan.chunks[0].begin, kMinChunkTokens);
  PlanDecode(std::vector<DecodeRow>{{3, 0}, {4, 0}}, 64, &plan);
  EXPECT_EQ(plan.used_chunks, 0);
  EXPECT_EQ(plan.rows[1].num_chunks, 0);
}

// A row is cut the same way alone and beside other rows (short or long, padded or not) as
// long as the step is small, so its result does not depend on what else runs with it.
TEST(DecodePlanTest, ARowIsCutTheSameWayWhateverRunsBesideIt) {
  const int32_t target = 264;
  for (const int32_t len : {1, 17, 100, 1000, kShortRowTokens, 5000}) {
    DecodePlan alone, beside;
    PlanDecode(std::vector<DecodeRow>{{3, len}}, target, &alone);
    PlanDecode(std::vector<DecodeRow>{{7, 0}, {5, 40}, {3, len}, {4, 3000}}, target, &beside);
    const RowWork row = beside.rows[2];
    ASSERT_EQ(row.num_chunks, alone.rows[0].num_chunks) << "len " << len;
    for (int32_t c = 0; c < row.num_chunks; ++c) {
      EXPECT_EQ(beside.chunks[row.first_chunk + c].begin, alone.chunks[c].begin) << "len " << len;
      EXPECT_EQ(beside.chunks[row.first_chunk + c].end, alone.chunks[c].end) << "len " << len;
    }
  }
}

}  // namespace
}  // namespace int4kv
