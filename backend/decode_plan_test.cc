#include "backend/decode_plan.h"

#include <algorithm>
#include <random>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace int4kv {
namespace {

// Every token a row attends ([first_token, seq_len)) is covered exactly once, in order, by
// chunks of that row, the used chunks first, and no other token is; the chunk count never
// exceeds the capacity; chunk boundaries are whole tiles from the row's first_token.
void ExpectCovers(const std::vector<DecodeRow>& rows, const DecodePlan& plan, int32_t capacity) {
  ASSERT_EQ(static_cast<int32_t>(plan.chunks.size()), capacity);
  ASSERT_LE(plan.used_chunks, capacity);
  for (size_t b = 0; b < rows.size(); ++b) {
    const RowWork& work = plan.rows[b];
    int32_t covered = rows[b].first_token;
    for (int32_t c = work.first_chunk; c < work.first_chunk + work.num_chunks; ++c) {
      const ChunkWork& chunk = plan.chunks[c];
      ASSERT_EQ(chunk.row, static_cast<int32_t>(b));
      ASSERT_EQ(chunk.request, rows[b].request);
      ASSERT_EQ(chunk.begin, covered);
      ASSERT_GT(chunk.end, chunk.begin);
      ASSERT_EQ((chunk.begin - rows[b].first_token) % kChunkAlign, 0);
      covered = chunk.end;
    }
    ASSERT_EQ(covered, rows[b].seq_len) << "row " << b;
  }
  for (int32_t c = plan.used_chunks; c < capacity; ++c) {
    ASSERT_EQ(plan.chunks[c].end, plan.chunks[c].begin);
  }
}

// PlanDecode covers every row within its capacity; within one wave of the target when the
// batch is smaller than the target and the step's balanced chunk length is not capped; and,
// where it is, in chunks of at most the cap (or of the length that kMaxChunkWaves waves need).
void ExpectValidPlan(const std::vector<DecodeRow>& rows, int32_t target, int32_t max_chunk_tokens,
                     int32_t max_seq_len) {
  DecodePlan plan;
  PlanDecode(rows, target, max_chunk_tokens, max_seq_len, &plan);
  const int32_t batch = static_cast<int32_t>(rows.size());
  ExpectCovers(rows, plan, ChunkCapacity(batch, target, max_chunk_tokens, max_seq_len));
  const int64_t budget = batch < target ? target - batch : target;
  const int64_t balanced_len = CeilDiv(plan.total_tokens, budget);
  if (max_chunk_tokens == 0 || balanced_len <= max_chunk_tokens) {
    if (batch < target) ASSERT_LE(plan.used_chunks, target);
    return;
  }
  const int64_t longest = std::max<int64_t>(
      max_chunk_tokens, CeilDiv(plan.total_tokens, static_cast<int64_t>(kMaxChunkWaves) * target));
  for (int32_t c = 0; c < plan.used_chunks; ++c) {
    ASSERT_LE(plan.chunks[c].end - plan.chunks[c].begin,
              CeilDiv(longest, kChunkAlign) * kChunkAlign)
        << "chunk " << c << " of " << plan.total_tokens << " tokens in " << batch << " rows";
  }
  ASSERT_LE(plan.used_chunks, static_cast<int64_t>(kMaxChunkWaves) * target + batch);
}

// `batch` rows of random requests and lengths below max_len, a fifth of them padded, and a
// third of the others attending only the tokens from a random first_token on (sometimes none).
std::vector<DecodeRow> RandomRows(int batch, int max_len, std::mt19937& rng) {
  std::vector<DecodeRow> rows(batch);
  for (int b = 0; b < batch; ++b) {
    rows[b] = {static_cast<int32_t>(rng() % 100),
               rng() % 5 == 0 ? 0 : static_cast<int32_t>(rng() % max_len)};
    if (rows[b].seq_len > 0 && rng() % 3 == 0) {
      rows[b].first_token = static_cast<int32_t>(rng() % (rows[b].seq_len + 1));
    }
  }
  return rows;
}

// The (begin, end) of each chunk of row b.
std::vector<std::pair<int32_t, int32_t>> RowChunks(const DecodePlan& plan, int b) {
  std::vector<std::pair<int32_t, int32_t>> chunks;
  const RowWork& work = plan.rows[b];
  for (int32_t c = work.first_chunk; c < work.first_chunk + work.num_chunks; ++c) {
    chunks.emplace_back(plan.chunks[c].begin, plan.chunks[c].end);
  }
  return chunks;
}

TEST(DecodePlanTest, CoversEveryTokenOnceWithinCapacity) {
  std::mt19937 rng(1);
  for (int trial = 0; trial < 3000; ++trial) {
    // Every fourth step large enough for a cap to bind at most targets; caps of none, the
    // kernels' and any other.
    const int batch = 1 + rng() % (trial % 4 == 0 ? 256 : 64);
    const int32_t target = 1 + rng() % 600;
    const int32_t max_seq_len = trial % 3 == 0 ? 70000 : 600;
    const int32_t caps[] = {0, kCappedChunkTokens,
                            kMinChunkTokens + static_cast<int32_t>(rng() % 10000)};
    ExpectValidPlan(RandomRows(batch, max_seq_len, rng), target, caps[(trial / 3) % 3],
                    max_seq_len);
  }
}

// Where one wave would take chunks longer than the cap, the step runs in more waves of chunks
// of the cap, at most kMaxChunkWaves of them; the capacity grows by what max_seq_len allows.
// Uncapped, the same steps take one wave of long chunks.
TEST(DecodePlanTest, CapsChunkLengthInLargeStepsWithinBoundedWaves) {
  const int32_t cap = 4096;  // a cap the figures below are worked out for
  DecodePlan plan;
  // 64 x 65536 on 264 slots: 16 chunks of 4096 a row (one wave would take 4 of 16,384).
  PlanDecode(std::vector<DecodeRow>(64, DecodeRow{0, 65536}), 264, cap, 65536, &plan);
  EXPECT_EQ(plan.used_chunks, 1024);
  EXPECT_EQ(plan.rows[5].num_chunks, 16);
  EXPECT_EQ(plan.chunks[17].end - plan.chunks[17].begin, cap);
  EXPECT_EQ(ChunkCapacity(64, 264, cap, 65536), 64 + 1024);
  PlanDecode(std::vector<DecodeRow>(64, DecodeRow{0, 65536}), 264, 0, 65536, &plan);
  EXPECT_EQ(plan.used_chunks, 256);
  EXPECT_EQ(plan.chunks.size(), 64u + 264u);
  // 128 x 65536: 2048 chunks of 4096 would exceed 4 waves (1056), so 9 a row of 7296.
  PlanDecode(std::vector<DecodeRow>(128, DecodeRow{0, 65536}), 264, cap, 65536, &plan);
  EXPECT_EQ(plan.used_chunks, 128 * 9);
  EXPECT_EQ(plan.chunks[0].end - plan.chunks[0].begin, 7296);
  EXPECT_EQ(ChunkCapacity(128, 264, cap, 65536), 128 + kMaxChunkWaves * 264);
  // The capacity grows only where max_seq_len lets rows need it: 64 rows of at most 4096
  // tokens fit one wave of chunks of at most 4096, whatever their lengths.
  EXPECT_EQ(ChunkCapacity(64, 264, cap, 4096), 64 + 264);
  EXPECT_EQ(ChunkCapacity(1, 264, cap, 1 << 20), 1 + 264);
  PlanDecode(std::vector<DecodeRow>(64, DecodeRow{0, 4096}), 264, cap, 4096, &plan);
  EXPECT_EQ(plan.used_chunks, 256);  // 4 of 1024 a row: one wave
  EXPECT_EQ(plan.chunks.size(), 64u + 264u);
  // A single long row still spreads over one wave: 1M tokens / 263 slots is about 4000.
  PlanDecode(std::vector<DecodeRow>{{3, 1 << 20}}, 264, cap, 1 << 20, &plan);
  EXPECT_LE(plan.used_chunks, 264);
  EXPECT_GE(plan.used_chunks, 256);
}

TEST(DecodePlanTest, SplitsALongSingleRowAcrossTheTarget) {
  DecodePlan plan;
  PlanDecode(std::vector<DecodeRow>{{3, 65536}}, 65, kCappedChunkTokens, 65536, &plan);
  EXPECT_EQ(plan.used_chunks, 64);
  EXPECT_EQ(plan.chunks[0].end - plan.chunks[0].begin, 1024);
  // 16 rows of 16384 on 264 slots: 16 chunks of 1024 each, one wave (not 17 and a tail).
  PlanDecode(std::vector<DecodeRow>(16, DecodeRow{0, 16384}), 264, kCappedChunkTokens, 16384,
             &plan);
  EXPECT_EQ(plan.used_chunks, 256);
  EXPECT_EQ(plan.total_tokens, 16 * 16384);
  // A row of at most kShortRowTokens takes 32-token chunks (32, 32, 32, 4); a longer row
  // 64-token ones.
  PlanDecode(std::vector<DecodeRow>{{3, 100}}, 64, kCappedChunkTokens, 100, &plan);
  EXPECT_EQ(plan.used_chunks, 4);
  EXPECT_EQ(plan.chunks[0].end - plan.chunks[0].begin, kShortRowChunkTokens);
  PlanDecode(std::vector<DecodeRow>{{3, kShortRowTokens}}, 264, kCappedChunkTokens, 65536, &plan);
  EXPECT_EQ(plan.chunks[0].end - plan.chunks[0].begin, kShortRowChunkTokens);
  EXPECT_EQ(plan.used_chunks, kShortRowTokens / kShortRowChunkTokens);
  PlanDecode(std::vector<DecodeRow>{{3, kShortRowTokens + 1}}, 264, kCappedChunkTokens, 65536,
             &plan);
  EXPECT_EQ(plan.chunks[0].end - plan.chunks[0].begin, kMinChunkTokens);
  PlanDecode(std::vector<DecodeRow>{{3, 0}, {4, 0}}, 64, kCappedChunkTokens, 512, &plan);
  EXPECT_EQ(plan.used_chunks, 0);
  EXPECT_EQ(plan.rows[1].num_chunks, 0);
}

// A target of no chunks (a device that reports no multiprocessors) plans as a target of one,
// instead of dividing by zero.
TEST(DecodePlanTest, ATargetOfNoChunksPlansAsATargetOfOne) {
  const std::vector<DecodeRow> rows = {{0, 300}, {1, 0}, {2, 70}};
  DecodePlan none, one;
  PlanDecode(rows, 0, kCappedChunkTokens, 512, &none);
  PlanDecode(rows, 1, kCappedChunkTokens, 512, &one);
  EXPECT_EQ(none.used_chunks, one.used_chunks);
  for (int32_t b = 0; b < 3; ++b) EXPECT_EQ(RowChunks(none, b), RowChunks(one, b)) << b;
  ExpectCovers(rows, none, ChunkCapacity(3, 1, kCappedChunkTokens, 512));
}

// A row is cut the same way alone and beside other rows (short or long, padded or not) as
// long as the step is small, so its result does not depend on what else runs with it.
TEST(DecodePlanTest, ARowIsCutTheSameWayWhateverRunsBesideIt) {
  const int32_t target = 264;
  for (const int32_t len : {1, 17, 100, 1000, kShortRowTokens, 5000}) {
    DecodePlan alone, beside;
    PlanDecode(std::vector<DecodeRow>{{3, len}}, target, kCappedChunkTokens, 65536, &alone);
    PlanDecode(std::vector<DecodeRow>{{7, 0}, {5, 40}, {3, len}, {4, 3000}}, target,
               kCappedChunkTokens, 65536, &beside);
    EXPECT_EQ(RowChunks(beside, 2), RowChunks(alone, 0)) << "len " << len;
  }
}

TEST(DecodePlanTest, BatchInvariantPlansCoverEveryRowInAtMostSplitsChunks) {
  std::mt19937 rng(2);
  for (int trial = 0; trial < 2000; ++trial) {
    const int batch = 1 + rng() % 64;
    const int32_t splits = trial % 4 == 0 ? kMaxBatchInvariantSplits : 1 + rng() % 80;
    const std::vector<DecodeRow> rows = RandomRows(batch, trial % 3 == 0 ? 70000 : 600, rng);
    DecodePlan plan;
    PlanDecodeBatchInvariant(rows, splits, &plan);
    ExpectCovers(rows, plan, BatchInvariantCapacity(batch, splits));
    for (int b = 0; b < batch; ++b) ASSERT_LE(plan.rows[b].num_chunks, splits) << "row " << b;
  }
  // A long row takes all its splits; a short one its minimum chunk length.
  DecodePlan plan;
  PlanDecodeBatchInvariant(std::vector<DecodeRow>{{3, 65536}, {4, 100}, {5, 0}}, 16, &plan);
  EXPECT_EQ(plan.rows[0].num_chunks, 16);
  EXPECT_EQ(plan.chunks[0].end - plan.chunks[0].begin, 4096);
  EXPECT_EQ(plan.rows[1].num_chunks, 4);  // 32, 32, 32, 4
  EXPECT_EQ(plan.rows[2].num_chunks, 0);
  EXPECT_EQ(plan.used_chunks, 20);
  EXPECT_EQ(plan.chunks.size(), 48u);
}

// Whatever the batch and the row's place in it, a batch-invariant plan cuts a row the same
// way, also where PlanDecode would cut it by the step's total (long rows, large steps).
TEST(DecodePlanTest, BatchInvariantPlansCutARowTheSameWayInAnyBatch) {
  std::mt19937 rng(3);
  for (const int32_t splits : {1, 7, 16, 64}) {
    for (const int32_t len : {1, 17, 100, 1000, kShortRowTokens + 1, 5000, 65536}) {
      DecodePlan alone;
      PlanDecodeBatchInvariant(std::vector<DecodeRow>{{3, len}}, splits, &alone);
      for (int trial = 0; trial < 20; ++trial) {
        std::vector<DecodeRow> rows = RandomRows(1 + rng() % 128, 70000, rng);
        const int place = static_cast<int>(rng() % rows.size());
        rows[place] = {3, len};
        DecodePlan beside;
        PlanDecodeBatchInvariant(rows, splits, &beside);
        ASSERT_EQ(RowChunks(beside, place), RowChunks(alone, 0))
            << "splits " << splits << " len " << len << " batch " << rows.size();
      }
    }
  }
  // PlanDecode cuts such a row by the step's total.
  DecodePlan alone, beside;
  PlanDecode(std::vector<DecodeRow>{{3, 65536}}, 264, kCappedChunkTokens, 65536, &alone);
  PlanDecode(std::vector<DecodeRow>(16, DecodeRow{3, 65536}), 264, kCappedChunkTokens, 65536,
             &beside);
  EXPECT_NE(RowChunks(beside, 0), RowChunks(alone, 0));
}

// A row attends tokens [first_token, seq_len): its chunks cover those alone, a row that attends
// none gets no chunk, and the step's total counts attended tokens (it sizes the chunks and the
// step's L2 and lockstep choices).
// Chunk lengths follow the attended tokens too: a window of at most kShortRowTokens takes short
// chunks whatever its context's length, and a batch-invariant row's splits divide its window.
TEST(DecodePlanTest, ARowIsCutFromItsFirstToken) {
  const std::vector<DecodeRow> rows = {
      {3, 1000, 1000}, {4, 5000, 4990}, {5, 65536, 60000}, {6, 5000, 4000}};
  for (const bool invariant : {false, true}) {
    SCOPED_TRACE(invariant ? "batch-invariant" : "whole step");
    DecodePlan plan;
    if (invariant) {
      PlanDecodeBatchInvariant(rows, 16, &plan);
      ExpectCovers(rows, plan, BatchInvariantCapacity(4, 16));
      EXPECT_EQ(plan.rows[2].num_chunks, 16);  // 5536 tokens in 16 chunks of 352 or fewer
      EXPECT_EQ(plan.rows[3].num_chunks, 16);  // 1000 tokens in chunks of 64
    } else {
      PlanDecode(rows, 264, kCappedChunkTokens, 65536, &plan);
      ExpectCovers(rows, plan, ChunkCapacity(4, 264, kCappedChunkTokens, 65536));
      const ChunkWork& window = plan.chunks[plan.rows[3].first_chunk];
      EXPECT_EQ(window.end - window.begin, kShortRowChunkTokens);
    }
    EXPECT_EQ(plan.total_tokens, 10 + 5536 + 1000);
    EXPECT_EQ(plan.rows[0].num_chunks, 0);
    EXPECT_EQ(RowChunks(plan, 1), (std::vector<std::pair<int32_t, int32_t>>{{4990, 5000}}));
    EXPECT_EQ(plan.chunks[plan.rows[2].first_chunk].begin, 60000);
  }
}

}  // namespace
}  // namespace int4kv
