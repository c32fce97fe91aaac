// Host-side planning of a CUDA decode step: splits every row's context into chunks so that
// a grid whose size depends only on the batch size (never on sequence lengths) gets
// balanced work, and records where each row's partial results land.
#ifndef INT4KV_BACKEND_DECODE_PLAN_H_
#define INT4KV_BACKEND_DECODE_PLAN_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "backend/decode_attention_backend.h"

namespace int4kv {

// One unit of split-KV work: tokens [begin, end) of batch row `row` (positions in its context,
// within the tokens the row attends). An empty chunk
// (end == begin) tells its thread blocks to exit at once. Plain data shared with kernels.
struct ChunkWork {
  int32_t row;
  int32_t request;
  int32_t begin;
  int32_t end;
};

// Where a row's partial results are: chunks [first_chunk, first_chunk + num_chunks).
struct RowWork {
  int32_t first_chunk;
  int32_t num_chunks;
};

constexpr int32_t kChunkAlign = 16;      // tokens per tensor-core tile
// Chunks of rows longer than kShortRowTokens are at least this long: shorter ones would
// double the partials the merge reads for less than they save (H100, 1 x 4096: 8.3 -> 10.0 us
// with 32-token chunks).
constexpr int32_t kMinChunkTokens = 64;
// A row of at most kShortRowTokens tokens may take chunks of kShortRowChunkTokens: in a short
// step the device is mostly idle, and a warp computes its tiles one after another at about
// 1 us each (H100), so more blocks with fewer tiles each finish sooner (1 x 2048: 9.85 -> 7.9
// us). The minimum depends on the row alone, never on the rest of the batch, so that a row
// is cut the same way whatever runs beside it while the step is small (below).
constexpr int32_t kShortRowTokens = 2048;
constexpr int32_t kShortRowChunkTokens = 32;

// ceil(a / b) for a >= 0, b > 0: chunk counts and lengths.
inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A chunk-length cap (`max_chunk_tokens` below; 0: none) cuts the largest steps into
// chunks of at most that many tokens, in several waves of the device rather than one wave of
// long chunks: where reads stall unevenly (page tables that scatter a row over a pool of
// gigabytes, so that address translation misses), blocks that finish early take the next
// chunk instead of idling until the slowest long chunk ends. The split kernels choose it
// (DecodeKernels::max_chunk_tokens): kCappedChunkTokens where it was measured to gain (H200,
// group 8, random tables: against no cap, 64 x 65536 5-6% faster; 2048 against 4096, steps of
// 1M-2M tokens 2-8% faster, shorter steps unchanged), none where it was not.
constexpr int32_t kCappedChunkTokens = 2048;
// ...in at most kMaxChunkWaves waves: past that, chunks grow beyond the cap. This bounds the
// grid, and so the empty blocks that short steps of a large batch pay for, and the partials'
// workspace, whatever max_seq_len is.
constexpr int32_t kMaxChunkWaves = 4;

// Chunk capacity (grid width) for a batch of `batch` rows of at most `max_seq_len` tokens when
// the device wants about `target_chunks` chunks in flight and chunks are capped at
// `max_chunk_tokens` (0: uncapped): the planner never emits more than this. It is batch +
// target_chunks, or more where capped chunks would take more than one wave: batch +
// min(batch x ceil(max_seq_len / max_chunk_tokens), kMaxChunkWaves x target_chunks). Fits
// int32: max_batch <= 65536, target_chunks is a few per multiprocessor.
int32_t ChunkCapacity(int32_t batch, int32_t target_chunks, int32_t max_chunk_tokens,
                      int32_t max_seq_len);

struct DecodePlan {
  std::vector<ChunkWork> chunks;  // [capacity], unused ones empty
  std::vector<RowWork> rows;      // [batch]
  int32_t used_chunks = 0;
  int64_t total_tokens = 0;  // sum of the rows' attended tokens (DecodeRow::attended_tokens)
};

// Splits rows into chunks. The balanced length is B = ceil(total tokens / (target_chunks -
// batch)) (target_chunks alone when the batch is not smaller), so that the step fits one wave;
// where max_chunk_tokens > 0 and B > max_chunk_tokens, it is max(max_chunk_tokens, ceil(total
// tokens / (kMaxChunkWaves x target_chunks))) instead. Row b's chunk length is L_b = max(minimum_b,
// B) rounded to kChunkAlign (minimum_b is kShortRowChunkTokens for rows of at most kShortRowTokens
// tokens, else kMinChunkTokens), and the row is cut into ceil(len / L_b) near-equal pieces. While B
// stays below a row's minimum, the row's chunks depend on that row alone, so its result is the
// same whatever else the batch holds. When batch < target_chunks and B is not capped this
// emits at most target_chunks chunks (one wave of the device); never more than
// ChunkCapacity(batch, target_chunks, max_chunk_tokens, max_seq_len). A row's len is the tokens
// it attends (DecodeRow::attended_tokens), cut from its first_token on; rows that attend none
// (padded, or first_token == seq_len) get no chunk. Preconditions: rows passed ValidateRows (every
// seq_len in [0, max_seq_len]); max_chunk_tokens is 0 or at least kMinChunkTokens.
void PlanDecode(absl::Span<const DecodeRow> rows, int32_t target_chunks, int32_t max_chunk_tokens,
                int32_t max_seq_len, DecodePlan* plan);

// Chunk capacity of a batch-invariant plan: every row may take `splits` chunks.
inline int32_t BatchInvariantCapacity(int32_t batch, int32_t splits) { return batch * splits; }

// Splits every row by its own length alone: row b's chunk length is max(minimum_b,
// ceil(len / splits)) rounded to kChunkAlign (minimum_b as in PlanDecode), then the row is cut
// into ceil(len / L_b) near-equal pieces, at most `splits`. A row's chunks are thus the same
// whatever else the batch holds, and so is its result once merged in a fixed order. Emits
// BatchInvariantCapacity(batch, splits) chunk slots, the used ones first. Preconditions: rows
// passed ValidateRows; splits in [1, kMaxBatchInvariantSplits] and batch <= 65536, so that
// batch * splits fits int32.
void PlanDecodeBatchInvariant(absl::Span<const DecodeRow> rows, int32_t splits, DecodePlan* plan);

}  // namespace int4kv

#endif  // INT4KV_BACKEND_DECODE_PLAN_H_
