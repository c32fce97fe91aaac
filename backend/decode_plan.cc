#include "backend/decode_plan.h"

#include <algorithm>

namespace int4kv {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t RoundUp(int64_t a, int64_t b) { return CeilDiv(a, b) * b; }

}  // namespace

void PlanDecode(absl::Span<const DecodeRow> rows, int32_t target_chunks, DecodePlan* plan) {
  const int32_t batch = static_cast<int32_t>(rows.size());
  target_chunks = std::max(target_chunks, 1);
  plan->chunks.assign(ChunkCapacity(batch, target_chunks), ChunkWork{-1, 0, 0, 0});
  plan->rows.assign(batch, RowWork{0, 0});
  int64_t total = 0;
  for (const DecodeRow& row : rows) total += row.seq_len;
  plan->total_tokens = total;
  // Each row adds at most one chunk beyond total / chunk_len, so sizing chunks for
  // target - batch keeps the count within one wave of `target_chunks` (when the batch is
  // smaller than the target; larger batches take several waves whatever the size).
  const int64_t budget = batch < target_chunks ? target_chunks - batch : target_chunks;
  const int64_t balanced_len = CeilDiv(total, budget);
  int32_t next = 0;
  for (int32_t b = 0; b < batch; ++b) {
    const int64_t len = rows[b].seq_len;
    plan->rows[b].first_chunk = next;
    if (len == 0) continue;
    const int64_t min_len = len <= kShortRowTokens ? kShortRowChunkTokens : kMinChunkTokens;
    const int64_t chunk_len = RoundUp(std::max(min_len, balanced_len), kChunkAlign);
    const int64_t pieces = CeilDiv(len, chunk_len);
    const int64_t piece_len = RoundUp(CeilDiv(len, pieces), kChunkAlign);
    for (int64_t begin = 0; begin < len; begin += piece_len) {
      plan->chunks[next++] = ChunkWork{b, rows[b].request, static_cast<int32_t>(begin),
                                       static_cast<int32_t>(std::min(len, begin + piece_len))};
    }
    plan->rows[b].num_chunks = next - plan->rows[b].first_chunk;
  }
  plan->used_chunks = next;
}

}  // namespace int4kv
