#include "backend/decode_plan.h"

#include <algorithm>

namespace int4kv {
namespace {

int64_t RoundUp(int64_t a, int64_t b) { return CeilDiv(a, b) * b; }

// Cuts row b into near-equal chunks of about `target_len` tokens (at least the row's minimum,
// rounded up to whole tiles), written from plan->chunks[*next] on and recorded in the row.
void CutRow(int32_t b, const DecodeRow& row, int64_t target_len, DecodePlan* plan, int32_t* next) {
  const int64_t len = row.attended_tokens();
  plan->rows[b].first_chunk = *next;
  if (len == 0) return;
  const int64_t min_len = len <= kShortRowTokens ? kShortRowChunkTokens : kMinChunkTokens;
  const int64_t chunk_len = RoundUp(std::max(min_len, target_len), kChunkAlign);
  const int64_t pieces = CeilDiv(len, chunk_len);
  const int64_t piece_len = RoundUp(CeilDiv(len, pieces), kChunkAlign);
  for (int64_t begin = 0; begin < len; begin += piece_len) {
    plan->chunks[(*next)++] =
        ChunkWork{b, row.request, static_cast<int32_t>(row.first_token + begin),
                  static_cast<int32_t>(row.first_token + std::min(len, begin + piece_len))};
  }
  plan->rows[b].num_chunks = *next - plan->rows[b].first_chunk;
}

// Sizes the plan's lists for the rows and `capacity` chunk slots (all empty) and sums the tokens.
void StartPlan(absl::Span<const DecodeRow> rows, int32_t capacity, DecodePlan* plan) {
  plan->chunks.assign(capacity, ChunkWork{-1, 0, 0, 0});
  plan->rows.assign(rows.size(), RowWork{0, 0});
  plan->total_tokens = 0;
  for (const DecodeRow& row : rows) plan->total_tokens += row.attended_tokens();
}

}  // namespace

int32_t ChunkCapacity(int32_t batch, int32_t target_chunks, int32_t max_chunk_tokens,
                      int32_t max_seq_len) {
  if (max_chunk_tokens <= 0) return batch + target_chunks;
  const int64_t capped_chunks =
      std::min<int64_t>(static_cast<int64_t>(batch) * CeilDiv(max_seq_len, max_chunk_tokens),
                        static_cast<int64_t>(kMaxChunkWaves) * target_chunks);
  return static_cast<int32_t>(batch + std::max<int64_t>(target_chunks, capped_chunks));
}

void PlanDecode(absl::Span<const DecodeRow> rows, int32_t target_chunks, int32_t max_chunk_tokens,
                int32_t max_seq_len, DecodePlan* plan) {
  const int32_t batch = static_cast<int32_t>(rows.size());
  target_chunks = std::max(target_chunks, 1);
  StartPlan(rows, ChunkCapacity(batch, target_chunks, max_chunk_tokens, max_seq_len), plan);
  // Each row adds at most one chunk beyond total / chunk_len, so sizing chunks for
  // target - batch keeps the count within one wave of `target_chunks` (when the batch is
  // smaller than the target; larger batches take several waves whatever the size).
  const int64_t budget = batch < target_chunks ? target_chunks - batch : target_chunks;
  int64_t chunk_len = CeilDiv(plan->total_tokens, budget);
  if (max_chunk_tokens > 0 && chunk_len > max_chunk_tokens) {
    // At most kMaxChunkWaves x target chunks plus one a row, and at most ceil(max_seq_len /
    // max_chunk_tokens) a row: within the capacity.
    chunk_len = std::max<int64_t>(
        max_chunk_tokens,
        CeilDiv(plan->total_tokens, static_cast<int64_t>(kMaxChunkWaves) * target_chunks));
  }
  int32_t next = 0;
  for (int32_t b = 0; b < batch; ++b) CutRow(b, rows[b], chunk_len, plan, &next);
  plan->used_chunks = next;
}

void PlanDecodeBatchInvariant(absl::Span<const DecodeRow> rows, int32_t splits, DecodePlan* plan) {
  const int32_t batch = static_cast<int32_t>(rows.size());
  StartPlan(rows, BatchInvariantCapacity(batch, splits), plan);
  int32_t next = 0;
  for (int32_t b = 0; b < batch; ++b) {
    CutRow(b, rows[b], CeilDiv(rows[b].attended_tokens(), splits), plan, &next);
  }
  plan->used_chunks = next;
}

}  // namespace int4kv
