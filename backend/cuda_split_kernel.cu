// Split-KV flash decoding over the INT4 cache on tensor cores (mma.sync m16n8k16, fp16
// operands, fp32 accumulation).
//
// Split kernel: one block per (chunk, group of up to 4 KV heads, or 8: kWideWarps), one warp
// per KV head. A warp walks its chunk in 16-token tiles with an online softmax and writes a
// normalized partial output and its log2-sum-exp; the merge kernel combines a row's partials.
// Per tile, with lane = 4r + c (r = lane / 4, c = lane % 4):
//
//   S[t, h]    = sum_k K[t, k] Q[h, k]    A = K (16 tokens x 16 k): lane (r, c) reads D/8 code
//                                          bytes of tokens r and r + 8, and the k order inside
//                                          a k-step is permuted to match; B = Q^T (16 k x 8
//                                          heads), loaded once per chunk in the same order.
//   O^T[d, h] += sum_t V^T[d, t] P[t, h]  A = V^T (16 dims x 16 tokens): lane (r, c) owns dims
//                                          [r D/8, (r+1) D/8) and reads D/16 code bytes of
//                                          tokens 2c, 2c+1, 2c+8, 2c+9; B = P, S's accumulator
//                                          transposed in registers (movmatrix).
//
// Lane (r, c) thus owns heads 2c, 2c+1 both in S and in O^T: softmax statistics never move
// between lanes. Codes and parameters of a tile travel by cp.async into a per-warp shared
// memory ring (2 stages); codes are expanded to fp16 pairs in registers with the 0x6400
// exponent trick (no float ever touches shared memory), scaled, and fed to the tensor cores.
// Where a quantization group spans whole 32-dim chunks (group sizes 32-128 at head_dims 64,
// 128, 256), the factored path (ProcessFactoredTile) takes the scales out of the per-element
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda_decode_kernels.h"
#include "backend/cuda_kernel_primitives.cuh"
#include "backend/cuda_split_kernel.h"

namespace int4kv {
namespace {

// Wide blocks in lockstep meet every kLockstepTiles tiles (measured against 16: H200, 128 x
// 65536 with random tables 14% faster than 4-warp blocks, against 9%).
constexpr int kLockstepTiles = 4;
constexpr int kTile = 16;
// How far (log2 domain) a score may exceed its head's running max before the max moves.
constexpr int kMaxSlack = 8;
constexpr unsigned kFullMask = 0xffffffffu;

// Two fp16 or bf16 parameters packed in a word, as an fp16 pair.
template <bool kBf16>
__device__ __forceinline__ __half2 ParamPair(uint32_t bits) {
  if constexpr (kBf16) {
    return __floats2half2_rn(__uint_as_float(bits << 16), __uint_as_float(bits & 0xffff0000u));
  } else {
    return AsHalf2(bits);
  }
}

template <int kBytes>
__device__ __forceinline__ void LoadShared(const uint8_t* p, uint32_t* out) {
  if constexpr (kBytes == 4) {
    out[0] = *reinterpret_cast<const uint32_t*>(p);
  } else if constexpr (kBytes == 8) {
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    out[0] = v.x, out[1] = v.y;
  } else {
    const uint4 v = *reinterpret_cast<const uint4*>(p);
    out[0] = v.x, out[1] = v.y, out[2] = v.z, out[3] = v.w;
  }
}

// kDim: padded head_dim (64, 128, 256). kFast: head_dim == kDim (codes and parameters move
// by cp.async; otherwise by checked 4-byte copies). kAsym: asymmetric cache. kHeadTiles: 1
// when group <= 8, else 2. kBf16Params: the cache's scales (and zero points) are bf16.
// kGroupChunks: 0, or the 16-byte code chunks (32 dims) of a quantization group, 1, 2 or 4 (group
// sizes 32, 64, 128) for the factored path (ProcessFactoredTile) of fast caches.
template <int kDim, bool kFast, bool kAsym, int kHeadTiles, bool kBf16Params, int kGroupChunks>
struct SplitKernel {
  static constexpr bool kFactored = kGroupChunks > 0;
  static_assert(!kFactored || kFast, "the factored path is for fast caches");
  // Per-warp pipeline depth in tiles: one tile in flight while the previous one is computed.
  // Deeper rings (3, 4) were measured slower on every benchmark case: with every warp of the
  // device asking for more at once, memory queues lengthen, and so does each block's chain
  // of dependent reads (chunk, page-table entries, first tile) and its tail.
  static constexpr int kStages = 2;
  // Chunks of at most this many tiles read every page-table entry before their first tile.
  static constexpr int kShortChunkTiles = kStages + 2;
  static constexpr int kKSteps = kDim / 16;    // k-steps of the QK product
  static constexpr int kDimTiles = kDim / 16;  // m-tiles of the PV product
  static constexpr int kKeyBytes = kDim / 8;   // K code bytes a lane reads per token
  static constexpr int kKeyWords = kKeyBytes / 4;
  static constexpr int kRowBytes = kDim / 2;   // staged code row
  static constexpr int kMaxGroups = kDim / 8;  // staged parameter row, in entries
  static constexpr int kParamRowBytes = kMaxGroups * 2;
  static constexpr int kParamKinds = kAsym ? 4 : 2;  // K scale, V scale (, K zero, V zero)
  // One stage: K codes [16][kRowBytes], V codes [16][kRowBytes] (rows permuted), then the
  // parameters [kinds][16][kMaxGroups]. Shared memory: each warp's kStages stages.
  static constexpr int kCodeBytes = kTile * kRowBytes;
  static constexpr int kStageBytes = 2 * kCodeBytes + kParamKinds * kTile * kParamRowBytes;
  static constexpr int kWarpSmemBytes = kStages * kStageBytes;

  // Bank-conflict-free placement of 16-byte chunks (see the lane patterns of ProcessTile).
  static __device__ __forceinline__ int KeyOffset(int token, int chunk) {
    return token * kRowBytes + (kDim == 256 ? (chunk ^ (token & 1)) : chunk) * 16;
  }
  // V row of a tile token: tokens 2c + e land in rows 4e + c, so the four rows a lane
  // group reads at once alternate between the two halves of the bank space.
  static __device__ __forceinline__ int ValueRow(int token) {
    return (token & 8) | ((token & 1) << 2) | ((token >> 1) & 3);
  }
  static __device__ __forceinline__ int ValueOffset(int row, int chunk) {
    if constexpr (kDim == 128) chunk ^= ((row >> 1) & 1) << 1;
    if constexpr (kDim == 256) chunk ^= (row & 3) << 1;
    return row * kRowBytes + chunk * 16;
  }
  // Factored path: K and V code rows alike, token t's 16-byte chunk j (32 dims) at chunk
  // j ^ ChunkSwizzle(t) of its row, so that the 8 rows of any 8 consecutive tokens' chunk j,
  // which one ldmatrix reads at once, fall in 8 different 16-byte bank groups.
  static constexpr int kCodeChunks = kRowBytes / 16;
  static_assert(kGroupChunks <= kCodeChunks, "a group within a row");
  static constexpr int kGroups = kFactored ? kCodeChunks / kGroupChunks : 1;  // a row's groups
  // One group a row (group size = head_dim: 2-byte parameter rows, under cp.async's 4-byte
  // minimum): each tile stages the aligned 4-byte word around each parameter entry instead.
  static constexpr bool kWordParams = kFactored && kGroups == 1;
  static constexpr int kTokensPerLine = 128 / kRowBytes;
  static __device__ __forceinline__ int ChunkSwizzle(int token) {
    return (token / kTokensPerLine) & (kCodeChunks - 1);
  }
  static __device__ __forceinline__ int FactoredOffset(int token, int chunk) {
    return token * kRowBytes + (chunk ^ ChunkSwizzle(token)) * 16;
  }
  // The row a lane addresses in LoadMatrices over chunks j, j + 1 (j even) of a code block:
  // token lane % 16 of chunk j + lane / 16, as MatrixRow(lane) ^ (16 j).
  static __device__ __forceinline__ int MatrixRow(int lane) {
    const int token = lane & 15;
    return token * kRowBytes + (((lane >> 4) ^ ChunkSwizzle(token)) << 4);
  }

  // Where one block's rows live: per-slot strides and the bases of its KV head's rows in
  // the current layer (computed once per block).
  struct Sources {
    const uint8_t* key;        // K codes of slot 0
    const uint8_t* value;      // V codes of slot 0
    const uint8_t* params[4];  // K scales, V scales, K zeros, V zeros of slot 0

    // params[kind] without a run-time index into the array (which would go to local memory).
    __device__ __forceinline__ const uint8_t* Params(int kind) const {
      if constexpr (kParamKinds == 2) return kind == 0 ? params[0] : params[1];
      const uint8_t* low = (kind & 1) ? params[1] : params[0];
      const uint8_t* high = (kind & 1) ? params[3] : params[2];
      return (kind & 2) ? high : low;
    }
    int32_t last_slot;          // the pool's last slot: page-table entries are clamped to it
    uint32_t slot_bytes;        // code bytes per slot
    uint32_t slot_param_bytes;  // parameter bytes per slot (one pool)
    int row_bytes;              // code bytes per head row (head_dim / 2)
    int param_row_bytes;        // parameter bytes per head row
    // Fast path: log2 of param_row_bytes, kept beside it since it comes from the launch's
    // log2_group_size by a subtraction (param_row_bytes needs a division), and IssueParamRows
    // compares it every tile.
    int log2_param_row;
    // A slot's rows of one layer (all KV heads' codes, or parameters) span at least 128
    // bytes, all read in the same step, so whole 128-byte lines may be fetched (CpAsync).
    bool wide_codes, wide_params;
    // kWordParams: params[] point at the aligned 4-byte words around the KV head's entries,
    // and these say which half of its word holds a K or a V entry (1: the high one). Zero
    // points sit at the same offsets of their own pool, so they share the scales' halves.
    int key_entry_high, value_entry_high;
  };

  static __device__ __forceinline__ Sources MakeSources(const SplitKernelParams& p, int kv_head) {
    const KvLayout& layout = p.cache.layout;
    Sources src;
    src.row_bytes = layout.RowBytes();
    src.last_slot = static_cast<int32_t>(layout.num_slots - 1);
    src.slot_bytes = static_cast<uint32_t>(layout.DataBytesPerSlot());
    src.key = p.cache.data + layout.DataOffset(p.layer, 0, layout.KeyRow(kv_head));
    src.value = p.cache.data + layout.DataOffset(p.layer, 0, layout.ValueRow(kv_head));
    src.slot_param_bytes = static_cast<uint32_t>(layout.ParamsPerSlot() * 2);
    const int64_t key_params = layout.ParamOffset(p.layer, 0, layout.KeyRow(kv_head));
    const int64_t value_params = layout.ParamOffset(p.layer, 0, layout.ValueRow(kv_head));
    src.params[0] = reinterpret_cast<const uint8_t*>(p.cache.scales + key_params);
    src.params[1] = reinterpret_cast<const uint8_t*>(p.cache.scales + value_params);
    src.params[2] = reinterpret_cast<const uint8_t*>(p.cache.zeros + key_params);
    src.params[3] = reinterpret_cast<const uint8_t*>(p.cache.zeros + value_params);
    src.param_row_bytes = layout.GroupsPerRow() * 2;
    src.log2_param_row = 1 + Log2OfPowerOfTwo(kDim) - p.log2_group_size;  // fast path only
    src.wide_codes = src.slot_bytes >= 128;
    src.wide_params = src.slot_param_bytes >= 128;
    src.key_entry_high = src.value_entry_high = 0;
    if constexpr (kWordParams) {
      // A slot's parameters span 4 x kv_heads bytes here, so a word stays aligned from slot
      // to slot, and the word around an entry lies inside the (16-byte aligned) pool.
      src.key_entry_high = static_cast<int>(key_params & 1);
      src.value_entry_high = static_cast<int>(value_params & 1);
#pragma unroll
      for (int kind = 0; kind < 4; ++kind) {
        src.params[kind] -= 2 * ((kind & 1) ? src.value_entry_high : src.key_entry_high);
      }
    }
    return src;
  }

  // Copies a tile's parameter rows, 2^kLog2Row bytes each (4 or more), in units of up to 16
  // bytes: unit u = 32 i + lane is part u % units_per_row of row u / units_per_row (kind *
  // kTile + token). All counts are compile-time powers of two and the unit count a multiple
  // of 32, so every lane copies the same number without a test, and a lane's tokens repeat
  // every two rounds, so their page-table entries are shuffled once. (At group 8, head_dim 128
  // a tile issues 27 instructions here, where one run-time loop over every row size issued
  // about 80 of the tile's 520: docs/TUNING_LOG.md, version 29.)
  // slot_reg: as in IssueTile (lane l holds the entry of tile token l % 16).
  template <int kLog2Row>
  static __device__ __forceinline__ void IssueParamRowsOf(const Sources& src, int slot_reg,
                                                          int lane, uint8_t* stage_params) {
    constexpr int kRowBytes = 1 << kLog2Row;
    constexpr int kUnit = kRowBytes < 16 ? kRowBytes : 16;
    constexpr int kUnitsPerRow = kRowBytes / kUnit;
    constexpr int kUnits = kTile * kParamKinds * kUnitsPerRow;
    static_assert(kRowBytes >= 4 && kUnits % 32 == 0, "whole rounds of 4-byte units or more");
    constexpr int kTokenRounds = kUnitsPerRow > 2 ? kUnitsPerRow / 2 : 1;
    uint32_t slots[kTokenRounds];
#pragma unroll
    for (int round = 0; round < kTokenRounds; ++round) {
      const int token = (32 * round + lane) / kUnitsPerRow % kTile;
      slots[round] = kUnitsPerRow == 1 ? slot_reg : __shfl_sync(kFullMask, slot_reg, token);
    }
#pragma unroll
    for (int i = 0; i < kUnits / 32; ++i) {
      const int unit = 32 * i + lane;
      const int row_index = unit / kUnitsPerRow;
      const int part = unit % kUnitsPerRow * kUnit;
      CpAsync<kUnit>(stage_params + row_index * kParamRowBytes + part,
                     WideMulAdd(slots[i % kTokenRounds], src.slot_param_bytes,
                                src.Params(row_index / kTile) + part),
                     src.wide_params);
    }
  }
  // IssueParamRowsOf for the row size src.log2_param_row, looked up from kLog2Row down.
  template <int kLog2Row>
  static __device__ __forceinline__ void IssueParamRows(const Sources& src, int slot_reg, int lane,
                                                        uint8_t* stage_params) {
    if constexpr (kLog2Row > 2) {
      if (src.log2_param_row != kLog2Row) {
        IssueParamRows<kLog2Row - 1>(src, slot_reg, lane, stage_params);
        return;
      }
    }
    IssueParamRowsOf<kLog2Row>(src, slot_reg, lane, stage_params);
  }

  // Starts loading one tile into `stage`. slot_reg: lane l holds the page-table entry of tile
  // token l % 16 (slot 0 past the chunk). Ends with one cp.async commit. The entry is clamped
  // into the pool here, where its load has long arrived, so that a table filled by its user
  // with a sentinel or a stale value gives that row wrong values, never a read outside the
  // pools (clamping right after the load made each tile wait for it: 8-18% slower).
  static __device__ __forceinline__ void IssueTile(const Sources& src, int slot_reg, int lane,
                                                   uint8_t* stage) {
    slot_reg = min(max(slot_reg, 0), src.last_slot);
    uint8_t* stage_k = stage;
    uint8_t* stage_v = stage + kCodeBytes;
    if constexpr (kFast) {
      // A slot's K and V rows of all KV heads span 2 * kv_heads * kDim / 2 bytes, at least 128
      // from head_dim 128 on: whole lines, known here, without the run-time choice's second
      // (predicated-off) copy instruction.
      const bool wide_codes = kDim >= 128 || src.wide_codes;
#pragma unroll
      for (int u0 = 0; u0 < kTile * kCodeChunks; u0 += 32) {
        const int unit = u0 + lane, token = unit / kCodeChunks, chunk = unit % kCodeChunks;
        const uint32_t slot = __shfl_sync(kFullMask, slot_reg, token);
        // chunk is the lane's own in every round: two bases, each kept for the whole chunk.
        const int key_offset = kFactored ? FactoredOffset(token, chunk) : KeyOffset(token, chunk);
        const int value_offset =
            kFactored ? FactoredOffset(token, chunk) : ValueOffset(ValueRow(token), chunk);
        CpAsync<16>(stage_k + key_offset, WideMulAdd(slot, src.slot_bytes, src.key + chunk * 16),
                    wide_codes);
        CpAsync<16>(stage_v + value_offset,
                    WideMulAdd(slot, src.slot_bytes, src.value + chunk * 16), wide_codes);
      }
    } else {
      constexpr int kRowWords = kRowBytes / 4;
#pragma unroll 4
      for (int u0 = 0; u0 < kTile * kRowWords; u0 += 32) {
        const int unit = u0 + lane, token = unit / kRowWords, byte = (unit % kRowWords) * 4;
        const uint32_t slot = __shfl_sync(kFullMask, slot_reg, token);
        const uint64_t offset = static_cast<uint64_t>(slot) * src.slot_bytes + byte;
        const bool valid = byte < src.row_bytes;
        const uint32_t k = valid ? __ldg(reinterpret_cast<const uint32_t*>(src.key + offset)) : 0u;
        const uint32_t v =
            valid ? __ldg(reinterpret_cast<const uint32_t*>(src.value + offset)) : 0u;
        *reinterpret_cast<uint32_t*>(stage_k + KeyOffset(token, byte / 16) + byte % 16) = k;
        *reinterpret_cast<uint32_t*>(stage_v + ValueOffset(ValueRow(token), byte / 16) +
                                     byte % 16) = v;
      }
    }
    // Parameters: one row of param_row_bytes per (kind, token), staged kParamRowBytes apart.
    uint8_t* stage_params = stage + 2 * kCodeBytes;
    if constexpr (kWordParams) {
      // Row (kind, token) = unit 32 i + lane: token lane % 16, whose entry the lane holds.
#pragma unroll
      for (int i = 0; i < kParamKinds / 2; ++i) {
        const int row_index = 32 * i + lane;
        CpAsync<4>(stage_params + row_index * kParamRowBytes,
                   WideMulAdd(slot_reg, src.slot_param_bytes, src.Params(row_index / kTile)),
                   src.wide_params);
      }
    } else if constexpr (kFast) {
      // A fast parameter row holds 2 * kDim / group_size bytes, at most kParamRowBytes (group
      // sizes of 8 to 128, all the cache accepts, at most kDim). Rows under 4 bytes (one group
      // a row) all take the word path above: the factored path serves every such fast cache.
      IssueParamRows<Log2OfPowerOfTwo(kParamRowBytes)>(src, slot_reg, lane, stage_params);
    } else {
      const int groups = src.param_row_bytes / 2;
      const int total = kTile * kParamKinds * groups;
      for (int u0 = 0; u0 < total; u0 += 32) {
        const int unit = u0 + lane;
        const int row_index = unit / groups, g = unit % groups;
        const uint32_t slot = __shfl_sync(kFullMask, slot_reg, row_index & (kTile - 1));
        if (unit < total) {
          const uint16_t* from = reinterpret_cast<const uint16_t*>(
              src.Params(row_index / kTile) + static_cast<uint64_t>(slot) * src.slot_param_bytes);
          reinterpret_cast<uint16_t*>(stage_params + row_index * kParamRowBytes)[g] = from[g];
        }
      }
    }
    CpAsyncCommit();
  }

  // Online-softmax state of one warp. Lane (r, c) owns heads 8t + 2c + e (e = 0, 1) of head
  // tile t: their statistics and their columns of the O^T fragments.
  struct WarpState {
    float m_run[kHeadTiles][2];  // running max, log2 domain (same in every lane of a column)
    float l_run[kHeadTiles][2];  // running sum of 2^(x - m_run) over this lane's tokens
    float o[kHeadTiles][kDimTiles][4];
    // Factored path, asymmetric caches: sum over tokens of P[t, h] (z + 8 s)[t, g] for group
    // g = r (rows r + 8 unused), heads 8t + 2c + e: the same for every dim of the group.
    float zero_sums[kHeadTiles][4];
    __device__ __forceinline__ void Reset() {
#pragma unroll
      for (int t = 0; t < kHeadTiles; ++t) {
        m_run[t][0] = m_run[t][1] = -INFINITY;
        l_run[t][0] = l_run[t][1] = 0.0f;
        zero_sums[t][0] = zero_sums[t][1] = zero_sums[t][2] = zero_sums[t][3] = 0.0f;
#pragma unroll
        for (int i = 0; i < kDimTiles; ++i) o[t][i][0] = o[t][i][1] = o[t][i][2] = o[t][i][3] = 0;
      }
    }
  };

  // Byte offsets, within a stage's parameter block, of the parameters a lane reads; they
  // depend only on the lane and the group size, so they are computed once per warp.
  struct ParamOffsets {
    int key[kKeyWords];        // scale of K code word w of token r (+8 j rows for token 8j+r)
    int value[kDimTiles / 4];  // V scale of tokens 2c (+1 row: 2c+1; +8 rows: 2c+8, 2c+9)
    // Packed forms: the aligned entries' offset, and per word (q) the byte selector that
    // picks its entry, doubled into both halves (K) or paired with the next token's (V).
    int key_packed, value_packed;
    uint32_t key_select[kKeyWords], value_select[kDimTiles / 4];
    __device__ __forceinline__ ParamOffsets(int lane, int log2_gs) {
      const int r = lane / 4, c = lane % 4;
      const int key_first = (c * (kDim / 4)) >> log2_gs;
      const int key_base = key_first & ~(kKeyWords - 1);
      key_packed = r * kParamRowBytes + key_base * 2;
#pragma unroll
      for (int w = 0; w < kKeyWords; ++w) {
        const int entry = (c * (kDim / 4) + 8 * w) >> log2_gs;
        key[w] = r * kParamRowBytes + (entry << 1);
        key_select[w] = 0x1010u + static_cast<uint32_t>(entry - key_base) * 0x2222u;
      }
      const int value_base = ((r * (kDim / 8)) >> log2_gs) & ~1;
      value_packed = (kTile + 2 * c) * kParamRowBytes + value_base * 2;
#pragma unroll
      for (int q = 0; q < kDimTiles / 4; ++q) {
        const int entry = (r * (kDim / 8) + 8 * q) >> log2_gs;
        value[q] = (kTile + 2 * c) * kParamRowBytes + (entry << 1);
        value_select[q] = 0x5410u + static_cast<uint32_t>(entry - value_base) * 0x2222u;
      }
    }
  };

  // Online softmax (log2 domain) of one tile's scores s, in units where s * scale_log2 is the
  // log2-domain logit, and P transposed into the PV product's B fragments. Heads 8t + 2c + e:
  // tokens r (s[t][e]) and r + 8 (s[t][2 + e]); the other tokens of a head are in the lanes of
  // the same c. kSlack: how far a score may exceed its head's running max before the max moves
  // (a weight is then at most 2^kSlack).
  template <bool kPartial, int kSlack>
  static __device__ __forceinline__ void Softmax(const float (&s)[kHeadTiles][4], float scale_log2,
                                                 int end, int tile_begin, int lane, WarpState& st,
                                                 uint32_t (&pb)[kHeadTiles][2]) {
    const int r = lane / 4;
    // The running max moves only when a score exceeds it by more than kSlack: until then
    // the tile's weights are taken against the old max (each at most 2^kSlack, which fp16
    // holds with its full precision) and neither the max reduction across the column's lanes
    // nor the rescale runs. The result is the same: every weight, the sum and the partial's
    // log-sum-exp refer to one max, whichever it is.
#pragma unroll
    for (int t = 0; t < kHeadTiles; ++t) {
      // Scores stay in the products' units: x = s * scale_log2 is formed only inside the
      // exponent's multiply-add, and the max test scales one value a head.
      float x[2][2];  // [e][token r, token r + 8]
      float lane_max[2];
      bool moves = false;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const bool valid = !kPartial || tile_begin + r + 8 * half < end;
          x[e][half] = valid ? s[t][2 * half + e] : -INFINITY;
        }
        lane_max[e] = fmaxf(x[e][0], x[e][1]) * scale_log2;  // scale_log2 > 0
        // m_run is -inf before a chunk's first tile, which has a token: it always moves there.
        moves |= lane_max[e] > st.m_run[t][e] + kSlack;
      }
      if (__any_sync(kFullMask, moves)) {
        float alpha[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float tile_max = lane_max[e];
          tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 4));
          tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 8));
          tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 16));
          const float m_new = fmaxf(st.m_run[t][e], tile_max);  // finite: a tile has a token
          alpha[e] = Exp2(st.m_run[t][e] - m_new);
          st.m_run[t][e] = m_new;
          st.l_run[t][e] *= alpha[e];
        }
#pragma unroll
        for (int i = 0; i < kDimTiles; ++i) {
          st.o[t][i][0] *= alpha[0], st.o[t][i][1] *= alpha[1];
          st.o[t][i][2] *= alpha[0], st.o[t][i][3] *= alpha[1];
        }
        if constexpr (kFactored && kAsym) {
          st.zero_sums[t][0] *= alpha[0], st.zero_sums[t][1] *= alpha[1];
        }
      }
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        x[e][0] = Exp2(fmaf(x[e][0], scale_log2, -st.m_run[t][e]));
        x[e][1] = Exp2(fmaf(x[e][1], scale_log2, -st.m_run[t][e]));
        st.l_run[t][e] += x[e][0] + x[e][1];
      }
      // P as two 8x8 fp16 matrices (tokens 0-7, 8-15) x heads, transposed into B fragments.
      pb[t][0] = TransposeHalf8x8(PackHalf2(x[0][0], x[1][0]));
      pb[t][1] = TransposeHalf8x8(PackHalf2(x[0][1], x[1][1]));
    }
  }

  // Logit soft-capping (AttentionShape.logit_soft_cap, p.soft_cap_log2 != 0) of a tile's
  // scores, on the per-element path: each becomes its log2-domain logit cap_log2 x tanh(y),
  // y = s x scale / cap, computed as cap_log2 x (1 - 2 / (1 + 2^(s x exp_scale))) with
  // exp_scale = 2 log2(e) x scale / cap; the softmax then takes them in a unit of 1. ex2 and rcp
  // keep about 22 bits of 1 - 2 / (1 + e), so a logit is off by about cap_log2 x 2^-21 (hence
  // kMaxLogitSoftCap); tanh.approx.f32 keeps 11, which would move a logit capped at 50 by up to
  // 0.025. The test of the cap a tile costs this path nothing measurable, but cost the factored
  // path 1% (H200, group size 32: 1 x 65536 25.3 -> 25.65 us, 64 x 4096 82.8 -> 83.35), so that
  // path has none: DecodeKernels::Select gives capped shapes the per-element path.
  static __device__ __forceinline__ void SoftCapScores(const SplitKernelParams& p,
                                                       float (&s)[kHeadTiles][4]) {
#pragma unroll
    for (int t = 0; t < kHeadTiles; ++t) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float e = Exp2(s[t][i] * p.soft_cap_exp_scale);
        // The cap is read where it is used, holding no register.
        s[t][i] = fmaf(-2.0f, Reciprocal(1.0f + e), 1.0f) * p.soft_cap_log2;
      }
    }
  }

  // Masks of the fp16 pairs of a lane's PV tokens (2c, 2c+1) and (2c+8, 2c+9): all ones, or,
  // in a tile that runs past the chunk end, ones over the tokens before it.
  struct TokenPairMasks {
    uint32_t mask[2];
    __device__ __forceinline__ uint32_t operator[](int k) const { return mask[k]; }
    template <bool kPartial>
    static __device__ __forceinline__ TokenPairMasks Of(int tile_begin, int end, int c) {
      TokenPairMasks keep{{0xffffffffu, 0xffffffffu}};
      if constexpr (kPartial) {
#pragma unroll
        for (int k = 0; k < 2; ++k) {
          const int t0 = tile_begin + 2 * c + 8 * k;
          keep.mask[k] = (t0 < end ? 0x0000ffffu : 0u) | (t0 + 1 < end ? 0xffff0000u : 0u);
        }
      }
      return keep;
    }
  };

  template <int kKind>
  static __device__ __forceinline__ uint16_t StagedParam(const uint8_t* params, int offset) {
    return *reinterpret_cast<const uint16_t*>(params + kKind * kTile * kParamRowBytes + offset);
  }
  static __device__ __forceinline__ __half2 Broadcast(uint16_t bits) {
    return ParamPair<kBf16Params>(static_cast<uint32_t>(bits) * 0x10001u);
  }

  // Computes one 16-token tile from its stage. kPartial: the tile runs past the chunk end.
  //   S[t, h]    = K Q^T   A = K (16 tokens x 16 k): lane (r, c) holds tokens r and r + 8;
  //                        B = Q^T (16 k x 8 heads), kept in registers for the whole chunk.
  //   O^T[d, h] += V^T P   A = V^T (16 dims x 16 tokens); B = P, S's accumulator transposed
  //                        in registers (movmatrix).
  template <bool kPartial>
  static __device__ __forceinline__ void ProcessTile(const SplitKernelParams& p, int end,
                                                     const uint32_t (&qb)[kHeadTiles][kKSteps][2],
                                                     const ParamOffsets& offsets,
                                                     const uint8_t* stage, int tile_begin, int lane,
                                                     WarpState& st) {
    const int r = lane / 4, c = lane % 4;
    const uint8_t* stage_k = stage;
    const uint8_t* stage_v = stage + kCodeBytes;
    const uint8_t* params = stage + 2 * kCodeBytes;
    constexpr int kValueBytes = kDim / 16;  // V code bytes a lane reads per token
    constexpr int kValueWords = kValueBytes / 4;
    // Up to head_dim 128 a lane's K parameter entries for one token (one per code word) lie
    // within kKeyWords aligned entries, read by one shared-memory load; at head_dim 128 its V
    // entries for one token within two. A byte permute then picks each word's entry, whatever
    // the group size, instead of a 2-byte load each.
    constexpr bool kPackedKeyParams = kDim <= 128;
    constexpr bool kPackedValueParams = kDim == 128;

    // ---- S = K Q^T for 16 tokens ----
    const int key_dim0 = c * (kDim / 4);
    uint32_t key_codes[2][kKeyWords];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int token = 8 * j + r;
      LoadShared<kKeyBytes <= 16 ? kKeyBytes : 16>(
          stage_k + KeyOffset(token, key_dim0 / 32) + (key_dim0 / 2) % 16, key_codes[j]);
      if constexpr (kKeyBytes == 32) {
        LoadShared<16>(stage_k + KeyOffset(token, 2 * c + 1), key_codes[j] + 4);
      }
    }
    // Two accumulators, by nibble, summed at the end: the tile's kKSteps MMAs form two
    // dependent chains. (Four, by code word parity and nibble, made 1 x 1024 8.35 -> 7.9 us on
    // an H100, where a warp alone on its scheduler waits on the chain; they cost 8 more
    // additions a tile.)
    float s_parts[2][kHeadTiles][4];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int t = 0; t < kHeadTiles; ++t) {
        s_parts[h][t][0] = s_parts[h][t][1] = s_parts[h][t][2] = s_parts[h][t][3] = 0.0f;
      }
    }
    // Packed K parameters: [kind: scale, zero][token r, r + 8][entries as words].
    constexpr int kKeyParamWords = kPackedKeyParams ? kKeyWords / 2 : 1;
    uint32_t key_params[2][2][kKeyParamWords];
    if constexpr (kPackedKeyParams) {
#pragma unroll
      for (int kind = 0; kind < (kAsym ? 2 : 1); ++kind) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          LoadShared<2 * kKeyWords>(params + 2 * kind * kTile * kParamRowBytes +
                                        offsets.key_packed + 8 * j * kParamRowBytes,
                                    key_params[kind][j]);
        }
      }
    }
#pragma unroll
    for (int w = 0; w < kKeyWords; ++w) {
      __half2 scale[2], zero[2];
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        if constexpr (kPackedKeyParams) {
          const uint32_t* words = key_params[0][j];
          scale[j] = ParamPair<kBf16Params>(
              __byte_perm(words[0], words[kKeyParamWords - 1], offsets.key_select[w]));
          zero[j] = AsHalf2(0u);
          if constexpr (kAsym) {
            const uint32_t* zeros = key_params[1][j];
            zero[j] = ParamPair<kBf16Params>(
                __byte_perm(zeros[0], zeros[kKeyParamWords - 1], offsets.key_select[w]));
          }
        } else {
          const int offset = offsets.key[w] + 8 * j * kParamRowBytes;
          scale[j] = Broadcast(StagedParam<0>(params, offset));
          zero[j] = kAsym ? Broadcast(StagedParam<2>(params, offset)) : AsHalf2(0u);
        }
      }
#pragma unroll
      for (int part = 0; part < 2; ++part) {
        const uint32_t x0 = key_codes[0][w] >> (8 * part), x1 = key_codes[1][w] >> (8 * part);
        // A registers: (token r, k 2c..), (token r+8, k 2c..), (token r, k 2c+8..),
        // (token r+8, k 2c+8..); the low nibbles are k 2c, 2c+1.
        const uint32_t a[4] = {
            DequantLow<kAsym>(x0, scale[0], zero[0]), DequantLow<kAsym>(x1, scale[1], zero[1]),
            DequantHigh<kAsym>(x0, scale[0], zero[0]), DequantHigh<kAsym>(x1, scale[1], zero[1])};
#pragma unroll
        for (int t = 0; t < kHeadTiles; ++t) {
          Mma(s_parts[part][t], a, qb[t][2 * w + part][0], qb[t][2 * w + part][1]);
        }
      }
    }
    float s[kHeadTiles][4];
#pragma unroll
    for (int t = 0; t < kHeadTiles; ++t) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        s[t][i] = s_parts[0][t][i] + s_parts[1][t][i];
      }
    }

    float scale_log2 = p.scale_log2;
    if (p.soft_cap_log2 != 0.0f) {
      SoftCapScores(p, s);
      scale_log2 = 1.0f;
    }
    uint32_t pb[kHeadTiles][2];
    Softmax<kPartial, kMaxSlack>(s, scale_log2, end, tile_begin, lane, st, pb);

    // ---- O^T += V^T P; lane (r, c) reads tokens 2c, 2c+1, 2c+8, 2c+9, dims [r D/8, ..) ----
    // Tokens past the chunk have P = 0; their V values are zeroed too so that whatever the
    // padding slot holds cannot turn 0 * x into NaN.
    const TokenPairMasks keep = TokenPairMasks::Of<kPartial>(tile_begin, end, c);
    uint32_t value_codes[4][kValueWords];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int token = 2 * c + (k & 1) + 8 * (k >> 1);
      const int byte = r * kValueBytes;
      LoadShared<kValueBytes>(stage_v + ValueOffset(ValueRow(token), byte / 16) + byte % 16,
                              value_codes[k]);
    }
    // Packed V parameters: [kind: scale, zero][token 2c, 2c+1, 2c+8, 2c+9], two entries each.
    uint32_t value_params[2][4];
    if constexpr (kPackedValueParams) {
#pragma unroll
      for (int kind = 0; kind < (kAsym ? 2 : 1); ++kind) {
#pragma unroll
        for (int t = 0; t < 4; ++t) {
          value_params[kind][t] = *reinterpret_cast<const uint32_t*>(
              params + 2 * kind * kTile * kParamRowBytes + offsets.value_packed +
              ((t >> 1) * 8 + (t & 1)) * kParamRowBytes);
        }
      }
    }
    // A lane's dims of m-tiles 4q .. 4q+3 are 8 consecutive dims, so they share one group:
    // the parameter pairs are built once per 4 m-tiles.
    __half2 scale2[2], zero2[2];
#pragma unroll
    for (int i = 0; i < kDimTiles; ++i) {
      const int word = i / 4, byte = i % 4;
      if (byte == 0 && kPackedValueParams) {
#pragma unroll
        for (int k = 0; k < 2; ++k) {
          const uint32_t select = offsets.value_select[word];
          scale2[k] = ParamPair<kBf16Params>(
              __byte_perm(value_params[0][2 * k], value_params[0][2 * k + 1], select));
          zero2[k] = AsHalf2(0u);
          if constexpr (kAsym) {
            zero2[k] = ParamPair<kBf16Params>(
                __byte_perm(value_params[1][2 * k], value_params[1][2 * k + 1], select));
          }
        }
      } else if (byte == 0) {
#pragma unroll
        for (int k = 0; k < 2; ++k) {  // token pairs (2c, 2c+1) and (2c+8, 2c+9)
          const int offset = offsets.value[word] + 8 * k * kParamRowBytes;
          scale2[k] = ParamPair<kBf16Params>(
              static_cast<uint32_t>(StagedParam<0>(params, offset)) |
              (static_cast<uint32_t>(StagedParam<0>(params, offset + kParamRowBytes)) << 16));
          zero2[k] = AsHalf2(0u);
          if constexpr (kAsym) {
            zero2[k] = ParamPair<kBf16Params>(
                static_cast<uint32_t>(StagedParam<2>(params, offset)) |
                (static_cast<uint32_t>(StagedParam<2>(params, offset + kParamRowBytes)) << 16));
          }
        }
      }
      // A fragment registers: (row r, tokens 2c, 2c+1), (row r+8, tokens 2c, 2c+1),
      // (row r, tokens 2c+8, 2c+9), (row r+8, tokens 2c+8, 2c+9); row r is the low nibble.
      uint32_t a[4];
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        uint32_t x = __byte_perm(value_codes[2 * k][word], value_codes[2 * k + 1][word],
                                 byte < 2 ? 0x5410 : 0x7632);
        if (byte & 1) x >>= 8;
        a[2 * k] = DequantLow<kAsym>(x, scale2[k], zero2[k]);
        a[2 * k + 1] = DequantHigh<kAsym>(x, scale2[k], zero2[k]);
        if constexpr (kPartial) {
          a[2 * k] &= keep[k];
          a[2 * k + 1] &= keep[k];
        }
      }
#pragma unroll
      for (int t = 0; t < kHeadTiles; ++t) Mma(st.o[t][i], a, pb[t][0], pb[t][1]);
    }
  }

  // ---- the factored path (group sizes 32-128, tuned head_dims) --------------------------
  // A quantization group g spans whole 16-byte chunks of a code row (32 dims each), so its
  // scale factors out of the per-element work:
  //   S[t, h]    = sum_g sK[t, g] (sum_{k in g} code[t, k] q[h, k] - 7 sum_{k in g} q[h, k])
  //                K codes enter the tensor cores as fp16 subnormals (code x 2^-20: a shift
  //                and a mask), two MMAs per chunk into the group's accumulator (two chains
  //                for groups of 4 chunks), which starts from the zero-code term (q_terms),
  //                then one fp32 multiply-add per score and group. Scores carry the 2^-20 unit
  //                until the softmax scale removes it. A row of one group has 2-byte scale
  //                rows, staged as the aligned words around them (kWordParams).
  //   O^T[d, h] += sum_t (code[t, d] - 7) (P[t, h] sV[t, g])
  //                V codes become exact fp16 (code - 7) (a mask and one fp16 add), and the
  //                scale goes into B: P sV, one fp16 multiply per pair of tokens and group.
  // Each fp16 product P sV is rounded once, as the dequantized value is on the other path, and
  // stays in fp16 (kFactoredSlack). O^T sums terms of both signs, as there: a code-valued A
  // with a separate zero-code correction would sum terms of one sign, whose sum grows with the
  // row and takes the tensor cores' truncation with it (2e-3 over 1,000 near-uniform weights).
  // Asymmetric caches (x = code s + z): S adds z sum q per group, from the same q sums; V codes
  // are centred on 8 (code - 8), and the zero point's share, sum_t P[t, h] (z + 8 s)[t, g], the
  // same for every dim of a group, comes from one more MMA a tile (A = (z + 8 s)^T: groups x
  // tokens, B = P) and joins O at the end.
  //
  // Lanes and fragments (lane = 4r + c), chunk j, from the swizzled rows (FactoredOffset):
  //   K: ldmatrix gives lane (r, c) word c of tokens r and r + 8; k-step 2j + p takes bytes
  //      p and p + 2 of it: dims 32j + 8c + 2p (+4) from the low nibbles (k 2c, 2c + 1) and
  //      the next dims from the high ones (k 2c + 8, 2c + 9).
  //   V: ldmatrix.trans gives lane (r, c) bytes 2r, 2r + 1 of tokens 2c, 2c + 1 (and 2c + 8,
  //      2c + 9): dims 32j + 4r .. 4r + 3. M-tile 2j holds the low nibbles (row r: dim 4r,
  //      row r + 8: dim 4r + 2), m-tile 2j + 1 the high ones (dims 4r + 1, 4r + 3).
  static constexpr int kScaleWords = (kGroups + 1) / 2;  // a token's K or V scales

  // x >> n, or x << -n.
  static __device__ __forceinline__ uint32_t ShiftRight(uint32_t x, int n) {
    return n >= 0 ? x >> n : x << -n;
  }
  // V codes centred on 7 (symmetric) or 8 (asymmetric, the zero points' share taking 8 s).
  static constexpr int kValueCentre = kAsym ? 8 : 7;

  // Scale entry g of a token's scale words, as fp32; high (0 or 1) flips the half it is read
  // from (kWordParams: the word was staged from an odd entry's position).
  static __device__ __forceinline__ float ScaleOf(const uint32_t (&words)[kScaleWords], int g,
                                                  int high) {
    const uint32_t w = words[g / 2];
    const bool upper = ((g & 1) ^ high) != 0;
    if constexpr (kBf16Params) return __uint_as_float(upper ? (w & 0xffff0000u) : (w << 16));
    return upper ? __high2float(AsHalf2(w)) : __low2float(AsHalf2(w));
  }

  template <bool kPartial>
  static __device__ __forceinline__ void ProcessFactoredTile(
      float scale_log2, int end, const uint32_t (&qb)[kHeadTiles][kKSteps][2],
      const float (&q_terms)[kHeadTiles][kGroups][2], int matrix_row, const uint8_t* stage,
      int tile_begin, int lane, int key_high, int value_high, WarpState& st) {
    const int r = lane / 4, c = lane % 4;
    const uint8_t* stage_k = stage;
    const uint8_t* stage_v = stage + kCodeBytes;
    const uint8_t* params = stage + 2 * kCodeBytes;

    // ---- S = K Q^T ----
    uint32_t key_scales[2][kScaleWords], key_zeros[2][kScaleWords];  // tokens r, r + 8
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      LoadShared<4 * kScaleWords>(params + (r + 8 * j) * kParamRowBytes, key_scales[j]);
      if constexpr (kAsym) {
        LoadShared<4 * kScaleWords>(params + (2 * kTile + r + 8 * j) * kParamRowBytes,
                                    key_zeros[j]);
      }
    }
    float s[kHeadTiles][4];
    // The current group's products, in kKeyChains independent chains of MMAs (by part) that
    // are added at the group's end: a group of 4 chunks would otherwise chain 8 MMAs.
    constexpr int kKeyChains = kGroupChunks >= 4 ? 2 : 1;
    float acc[kKeyChains][kHeadTiles][4];
#pragma unroll
    for (int jp = 0; jp < kCodeChunks / 2; ++jp) {
      uint32_t words[4];  // tokens r, r + 8 of chunk 2 jp, then of chunk 2 jp + 1
      LoadMatrices<false>(stage_k + (matrix_row ^ (32 * jp)), words);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int j = 2 * jp + h, g = j / kGroupChunks;
#pragma unroll
        for (int part = 0; part < 2; ++part) {
          // Nibbles of bytes p, p + 2 into bits 4-7 of each half: low ones shifted up by 4.
          const uint32_t w0 = words[2 * h], w1 = words[2 * h + 1];
          const uint32_t a[4] = {ShiftRight(w0, 8 * part - 4) & kHighNibbleMask,
                                 ShiftRight(w1, 8 * part - 4) & kHighNibbleMask,
                                 ShiftRight(w0, 8 * part) & kHighNibbleMask,
                                 ShiftRight(w1, 8 * part) & kHighNibbleMask};
          const int chain = kKeyChains == 2 ? part : 0;
#pragma unroll
          for (int t = 0; t < kHeadTiles; ++t) {
            const uint32_t(&b)[2] = qb[t][2 * j + part];
            if ((part == 0 || kKeyChains == 2) && j % kGroupChunks == 0) {
              // Chain 0 starts from the symmetric codes' offset term, the others (and every
              // chain of an asymmetric cache) from zero.
              const bool from_terms = !kAsym && part == 0;
              MmaFrom(acc[chain][t], a, b[0], b[1], from_terms ? q_terms[t][g][0] : 0.0f,
                      from_terms ? q_terms[t][g][1] : 0.0f);
            } else {
              Mma(acc[chain][t], a, b[0], b[1]);
            }
          }
        }
        if (j % kGroupChunks != kGroupChunks - 1) continue;  // the group goes on
        if constexpr (kKeyChains == 2) {
#pragma unroll
          for (int t = 0; t < kHeadTiles; ++t) {
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[0][t][i] += acc[1][t][i];
          }
        }
        const float scale_r = ScaleOf(key_scales[0], g, key_high);
        const float scale_r8 = ScaleOf(key_scales[1], g, key_high);
#pragma unroll
        for (int t = 0; t < kHeadTiles; ++t) {
          // The scores before this group's codes: the groups before it, and (asymmetric) its
          // zero points times its q sums (q_terms holds the q sums then).
          float base[4] = {0.0f, 0.0f, 0.0f, 0.0f};
          if (g > 0) base[0] = s[t][0], base[1] = s[t][1], base[2] = s[t][2], base[3] = s[t][3];
          if constexpr (kAsym) {
            const float zero_r = ScaleOf(key_zeros[0], g, key_high);
            const float zero_r8 = ScaleOf(key_zeros[1], g, key_high);
            base[0] = fmaf(zero_r, q_terms[t][g][0], base[0]);
            base[1] = fmaf(zero_r, q_terms[t][g][1], base[1]);
            base[2] = fmaf(zero_r8, q_terms[t][g][0], base[2]);
            base[3] = fmaf(zero_r8, q_terms[t][g][1], base[3]);
          }
          s[t][0] = fmaf(scale_r, acc[0][t][0], base[0]);
          s[t][1] = fmaf(scale_r, acc[0][t][1], base[1]);
          s[t][2] = fmaf(scale_r8, acc[0][t][2], base[2]);
          s[t][3] = fmaf(scale_r8, acc[0][t][3], base[3]);
        }
      }
    }

    uint32_t pb[kHeadTiles][2];
    Softmax<kPartial, kFactoredSlack>(s, scale_log2, end, tile_begin, lane, st, pb);

    // ---- O^T += V^T (P sV) ----
    // Tokens past the chunk have P = 0, and their B entries are cleared, so that whatever
    // scale the padding slot holds cannot turn 0 x s into NaN (codes are always finite).
    const TokenPairMasks keep = TokenPairMasks::Of<kPartial>(tile_begin, end, c);
    uint32_t value_scales[4][kScaleWords];  // tokens 2c, 2c + 1, 2c + 8, 2c + 9
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int token = 2 * c + (k & 1) + 8 * (k >> 1);
      LoadShared<4 * kScaleWords>(params + (kTile + token) * kParamRowBytes, value_scales[k]);
    }
    if constexpr (kAsym) {
      // (z + 8 s)^T as the A fragment of the zero points' sums: row r is group r (entry r of
      // the tokens' rows; rows past the row's groups hold whatever the stage has, and only
      // their own rows of the product, never read, see them), rows r + 8 are zero. Columns of
      // tokens past the chunk are cleared (B is 0 there, but the entries may not be finite).
      uint32_t a[4] = {0u, 0u, 0u, 0u};
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int offset = (2 * c + 8 * k) * kParamRowBytes + (r >> 1) * 4;
        const uint32_t select = ((r & 1) ^ value_high) ? 0x7632 : 0x5410;
        const uint8_t* scale_row = params + kTile * kParamRowBytes + offset;
        const uint8_t* zero_row = params + 3 * kTile * kParamRowBytes + offset;
        const __half2 scales = ParamPair<kBf16Params>(
            __byte_perm(*reinterpret_cast<const uint32_t*>(scale_row),
                        *reinterpret_cast<const uint32_t*>(scale_row + kParamRowBytes), select));
        const __half2 zeros = ParamPair<kBf16Params>(
            __byte_perm(*reinterpret_cast<const uint32_t*>(zero_row),
                        *reinterpret_cast<const uint32_t*>(zero_row + kParamRowBytes), select));
        a[2 * k] = AsU32(__hfma2(scales, AsHalf2(kHalfEight), zeros)) & keep[k];
      }
#pragma unroll
      for (int t = 0; t < kHeadTiles; ++t) Mma(st.zero_sums[t], a, pb[t][0], pb[t][1]);
    }
    uint32_t b[kHeadTiles][2];  // the current group's B = P sV
#pragma unroll
    for (int jp = 0; jp < kCodeChunks / 2; ++jp) {
      uint32_t codes[4];  // token pairs (2c, 2c+1), (2c+8, 2c+9) of chunk 2 jp, then 2 jp + 1
      LoadMatrices<true>(stage_v + (matrix_row ^ (32 * jp)), codes);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int j = 2 * jp + h, g = j / kGroupChunks;
        if (j % kGroupChunks == 0) {
#pragma unroll
          for (int k = 0; k < 2; ++k) {
            const __half2 scales = ParamPair<kBf16Params>(
                __byte_perm(value_scales[2 * k][g / 2], value_scales[2 * k + 1][g / 2],
                            ((g & 1) ^ value_high) ? 0x7632 : 0x5410));
#pragma unroll
            for (int t = 0; t < kHeadTiles; ++t) {
              b[t][k] = AsU32(__hmul2(AsHalf2(pb[t][k]), scales)) & keep[k];
            }
          }
        }
        const uint32_t y0 = codes[2 * h], y1 = codes[2 * h + 1];
        const uint32_t z0 = y0 >> 8, z1 = y1 >> 8;
        const uint32_t low[4] = {
            AsU32(CentredLowNibbles<kValueCentre>(y0)), AsU32(CentredLowNibbles<kValueCentre>(z0)),
            AsU32(CentredLowNibbles<kValueCentre>(y1)), AsU32(CentredLowNibbles<kValueCentre>(z1))};
        const uint32_t high[4] = {AsU32(CentredHighNibbles<kValueCentre>(y0)),
                                  AsU32(CentredHighNibbles<kValueCentre>(z0)),
                                  AsU32(CentredHighNibbles<kValueCentre>(y1)),
                                  AsU32(CentredHighNibbles<kValueCentre>(z1))};
#pragma unroll
        for (int t = 0; t < kHeadTiles; ++t) {
          Mma(st.o[t][2 * j], low, b[t][0], b[t][1]);
          Mma(st.o[t][2 * j + 1], high, b[t][0], b[t][1]);
        }
      }
    }
  }

  // kWarps: KV heads a block (kMaxWarps or kWideWarps).
  template <int kWarps>
  static __device__ void Run(const SplitKernelParams& p) {
    // Block = (chunk, group of up to kWarps KV heads); warp = one KV head over the whole
    // chunk. The warps of a block read the rows of the same slots, which sit side by side in
    // memory, at about the same time.
    const int head_blocks = (p.kv_heads + kWarps - 1) / kWarps;
    const int chunk = blockIdx.x / head_blocks;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int kv_head = (blockIdx.x % head_blocks) * kWarps + warp;
    const ChunkWork work = p.chunks[chunk];  // written by Plan's copy, not by a kernel
    bool large_step = false;                 // so is this flag
    if constexpr (kWarps == kWideWarps) large_step = *p.large_step != 0;
    // A step whose plan leaves chunk p.early_release_chunk empty uses under that many chunks:
    // its grid leaves multiprocessors free, and the merge's blocks may launch at once.
    const ChunkWork probe = p.chunks[p.early_release_chunk];
    const bool release_early = probe.end <= probe.begin;
    if (work.end <= work.begin || kv_head >= p.kv_heads) return;
    const int r = lane / 4, c = lane % 4;
    // The first tile's page-table entries, read before the wait, when the kernel before may
    // still be writing them: they only start the first tile's copies as soon as the wait
    // ends, clamped into the pool so that any value stays a legal read, and the tile is
    // copied again if the entries read after the wait differ (test
    // PageTableRewrittenByTheKernelBeforeRun). Saves most of a page-table trip per step.
    // IssueTile clamps every entry again; dropping this first clamp made short steps 0.3-0.7
    // us slower (1 x 1024 6.9 -> 7.4 us), for reasons not found, so it stays. MakeSources
    // computes the same bound; taking it from there means computing Sources first, which
    // reschedules the kernel, and such rebuilds have moved short steps by 0.3-0.7 us (rows
    // (bc), (bg)-(bk) of docs/TUNING_LOG.md), so the two stay apart.
    const int32_t last_slot = static_cast<int32_t>(p.cache.layout.num_slots - 1);
    int speculative_slot = 0;
    if constexpr (kFast) {
      const int token = work.begin + (lane & 15);
      if (token < work.end) {
        const int32_t* entry = p.req_to_token + work.request * p.req_to_token_stride + token;
        speculative_slot = min(max(LoadThroughL2(entry), 0), last_slot);
      }
    }
    // Row addresses and staged-parameter offsets come from kernel parameters alone, so they
    // are worked out while the kernel before drains: after the wait, the first copies need
    // only the page-table entries (1 x 4096 8.5 -> 8.3 us, 1 x 1024 6.9 -> 6.55).
    const Sources sources = MakeSources(p, kv_head);
    const ParamOffsets offsets(lane, p.log2_group_size);
    // Launched as a programmatic dependent of the kernel before it: everything from here on
    // (page table, q, the cache; the partials the previous merge may still be reading) waits
    // until that kernel has finished and its writes are visible.
    asm volatile("griddepcontrol.wait;" ::: "memory");
    if (release_early) asm volatile("griddepcontrol.launch_dependents;");

    // The stages start on a 128-byte boundary even if static shared memory comes first: with
    // 16 bytes of static shared memory ahead of 16-byte-aligned stages, steps of 65,536 tokens
    // and more ran 14% slower (H100: 1 x 65536 43.45 -> 49.5 us), and as fast as without
    // them once the stages were 128-byte aligned (43.4 us).
    extern __shared__ __align__(128) uint8_t smem[];
    uint8_t* my_stages = smem + warp * kStages * kStageBytes;

    // The first page-table loads go out before anything waits.
    const int32_t* page_row = p.req_to_token + work.request * p.req_to_token_stride;
    const int num_tiles = (work.end - work.begin + kTile - 1) / kTile;
    auto load_slot = [&](int tile) -> int {
      const int token = work.begin + tile * kTile + (lane & 15);
      return (tile < num_tiles && token < work.end) ? __ldg(page_row + token) : 0;
    };
    int first_slots[kStages];
#pragma unroll
    for (int s = 0; s < kStages; ++s) first_slots[s] = load_slot(s);
    // A chunk of at most kShortChunkTiles tiles reads all its page-table entries here, so that
    // no copy of a later tile waits for one; longer chunks read them a tile ahead of their
    // copies (two or three tiles ahead cost those up to 0.4 us: 16 x 4096, 64 x 1024).
    const bool short_chunk = num_tiles <= kShortChunkTiles;
    int slot_after = short_chunk ? load_slot(kStages) : 0;
    int slot_later = short_chunk ? load_slot(kStages + 1) : 0;

    // Q^T fragments straight from global memory, in the permuted k order of the K reads
    // (see ProcessTile): registers (d, d + 4) and (d + 1, d + 5) of head 8t + r. Their loads
    // go out with the page-table loads, so that the two trips overlap; they are converted
    // and permuted only after the first tile's copies are issued.
    const int64_t q_first = static_cast<int64_t>(work.row) * p.q_row_stride +
                            static_cast<int64_t>(kv_head) * p.group * p.head_dim;
    const uint32_t* q_words =
        reinterpret_cast<const uint32_t*>(static_cast<const uint16_t*>(p.q) + q_first);
    uint32_t q_raw[kHeadTiles][kKSteps][2];  // (q[head][d], q[head][d + 1]) and d + 4, d + 5
#pragma unroll
    for (int t = 0; t < kHeadTiles; ++t) {
      if constexpr (kFast) {  // k-steps 2j, 2j + 1 read 8 consecutive dims: one 16-byte load
        const int head = 8 * t + r;
#pragma unroll
        for (int j = 0; j < kKSteps / 2; ++j) {
          // The factored path's k-steps 2j, 2j + 1 cover chunk j: dims 32j + 8c ...
          const int first_dim = kFactored ? 32 * j + 8 * c : c * (kDim / 4) + 8 * j;
          const uint4 v =
              head < p.group
                  ? __ldg(reinterpret_cast<const uint4*>(q_words + (head * kDim + first_dim) / 2))
                  : make_uint4(0u, 0u, 0u, 0u);
          q_raw[t][2 * j][0] = v.x, q_raw[t][2 * j + 1][0] = v.y;
          q_raw[t][2 * j][1] = v.z, q_raw[t][2 * j + 1][1] = v.w;
        }
      } else {
#pragma unroll
        for (int s = 0; s < kKSteps; ++s) {
          const int head = 8 * t + r, d = c * (kDim / 4) + 8 * (s / 2) + 2 * (s % 2);
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int dim = d + 4 * h;
            q_raw[t][s][h] = head < p.group && dim < p.head_dim
                                 ? __ldg(q_words + (head * p.head_dim + dim) / 2)
                                 : 0u;
          }
        }
      }
    }

    if constexpr (!kFast) {  // parameter entries past the row's groups must read as zero
      for (int i = lane * 4; i < kStages * kStageBytes; i += 32 * 4) {
        *reinterpret_cast<uint32_t*>(my_stages + i) = 0u;
      }
      __syncwarp();
    }
    static_assert(kStages == 2, "one tile issued ahead");
    if constexpr (kFast) {
      IssueTile(sources, speculative_slot, lane, my_stages);
      // Still the entries the copies used? Else copy the tile again with the real ones.
      if (__any_sync(kFullMask, speculative_slot != first_slots[0])) {
        CpAsyncWait<0>();
        __syncwarp();
        IssueTile(sources, first_slots[0], lane, my_stages);
      }
    } else {
      IssueTile(sources, first_slots[0], lane, my_stages);
    }
    int slot_next = first_slots[kStages - 1];

    uint32_t qb[kHeadTiles][kKSteps][2];
#pragma unroll
    for (int t = 0; t < kHeadTiles; ++t) {
#pragma unroll
      for (int s = 0; s < kKSteps; ++s) {
        uint32_t pair[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          pair[h] = p.q_is_bf16 ? AsU32(ParamPair<true>(q_raw[t][s][h])) : q_raw[t][s][h];
        }
        qb[t][s][0] = __byte_perm(pair[0], pair[1], 0x5410);
        qb[t][s][1] = __byte_perm(pair[0], pair[1], 0x7632);
      }
    }
    // Factored path: per group g, 2^-20 x the sum of q over the group's dims for heads 8t + 2c,
    // 8t + 2c + 1, from MMAs over a constant A; times -7 (symmetric: the group's score
    // accumulators start from it), or as it is (asymmetric: the zero points' factor).
    float q_terms[kHeadTiles][kGroups][2];
    float scale_log2 = p.scale_log2;
    if constexpr (kFactored) {
      scale_log2 *= kTwoTo20;
      constexpr uint32_t kUnit = kAsym ? kCodeUnit : kMinusZeroCode;
      constexpr uint32_t kZeroA[4] = {kUnit, kUnit, kUnit, kUnit};
#pragma unroll
      for (int t = 0; t < kHeadTiles; ++t) {
#pragma unroll
        for (int g = 0; g < kGroups; ++g) {
          float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
          for (int s = 2 * g * kGroupChunks; s < 2 * (g + 1) * kGroupChunks; ++s) {
            Mma(d, kZeroA, qb[t][s][0], qb[t][s][1]);
          }
          q_terms[t][g][0] = d[0], q_terms[t][g][1] = d[1];
        }
      }
    }
    const int matrix_row = MatrixRow(lane);
    const int key_high = sources.key_entry_high, value_high = sources.value_entry_high;

    WarpState st;
    st.Reset();
    int stage = 0;  // stage of the tile processed next
    // Wide blocks of a large step whose first tile's slots are not consecutive (a table that
    // scatters the row over the pool) keep their warps within about kLockstepTiles tiles of
    // each other: warps that drift apart ask for the pages of more slots at once than address
    // translation keeps up with. Each warp judges from the entries it read after the wait;
    // the block then decides together, so that the whole block takes the barrier or none of
    // it does even where the entries differ between warps (a page table written during Run,
    // against its contract, would otherwise leave some warps waiting at a barrier the others
    // never reach: a hung stream instead of wrong values). large_step is the same in every
    // warp (Plan's copy), and no warp of a wide block has returned before this point.
    bool lockstep = false;
    if constexpr (kWarps == kWideWarps) {
      if (large_step) {
        const int next_slot = __shfl_down_sync(kFullMask, first_slots[0], 1);
        const bool scattered =
            !__all_sync(kFullMask, (lane & 15) == 15 || next_slot == first_slots[0] + 1);
        lockstep = __syncthreads_or(scattered) != 0;
      }
    }
    for (int tile = 0; tile < num_tiles; ++tile) {
      if constexpr (kWarps == kWideWarps) {
        if (lockstep && tile % kLockstepTiles == kLockstepTiles - 1) {
          asm volatile("bar.sync 1, %0;" ::"n"(32 * kWarps) : "memory");
        }
      }
      const int ahead = tile + kStages - 1;
      const int ahead_stage = stage == 0 ? kStages - 1 : stage - 1;
      if (ahead < num_tiles) {
        IssueTile(sources, slot_next, lane, my_stages + ahead_stage * kStageBytes);
        if (short_chunk) {
          slot_next = slot_after;
          slot_after = slot_later;
        } else {
          slot_next = load_slot(ahead + 1);
        }
      } else {
        CpAsyncCommit();  // one group per step keeps wait_group's count right
      }
      CpAsyncWait<kStages - 1>();
      __syncwarp();
      const int tile_begin = work.begin + tile * kTile;
      const uint8_t* tile_stage = my_stages + stage * kStageBytes;
      if constexpr (kFactored) {
        if (tile_begin + kTile <= work.end) {
          ProcessFactoredTile<false>(scale_log2, work.end, qb, q_terms, matrix_row, tile_stage,
                                     tile_begin, lane, key_high, value_high, st);
        } else {
          ProcessFactoredTile<true>(scale_log2, work.end, qb, q_terms, matrix_row, tile_stage,
                                    tile_begin, lane, key_high, value_high, st);
        }
      } else if (tile_begin + kTile <= work.end) {
        ProcessTile<false>(p, work.end, qb, offsets, tile_stage, tile_begin, lane, st);
      } else {
        ProcessTile<true>(p, work.end, qb, offsets, tile_stage, tile_begin, lane, st);
      }
      __syncwarp();  // this stage is refilled next
      stage = stage == kStages - 1 ? 0 : stage + 1;
    }
    CpAsyncWait<0>();
    // Let the merge kernel start launching (programmatic dependent launch); it waits for this
    // whole grid to finish before it reads any partial.
    if (!release_early) asm volatile("griddepcontrol.launch_dependents;");

      // Partial result: O normalized by its own sum, and m + log2(sum). Lane (r, c) owns heads
      // 8t + 2c + e; its sums cover tokens r and r + 8 of every tile, so the 8 lanes of a
      // column add theirs up.
#pragma unroll
    for (int t = 0; t < kHeadTiles; ++t) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float l = st.l_run[t][e];
        l += __shfl_xor_sync(kFullMask, l, 4);
        l += __shfl_xor_sync(kFullMask, l, 8);
        l += __shfl_xor_sync(kFullMask, l, 16);
        // Factored path, asymmetric: group g's zero-point sum (lane 4g + c holds it), fetched
        // while every lane is still here.
        float zero_sums[kFactored && kAsym ? kGroups : 1];
        if constexpr (kFactored && kAsym) {
#pragma unroll
          for (int g = 0; g < kGroups; ++g) {
            zero_sums[g] = __shfl_sync(kFullMask, st.zero_sums[t][e], 4 * g + c);
          }
        }
        const int head = 8 * t + 2 * c + e;
        if (head >= p.group) continue;
        const int64_t out_head = static_cast<int64_t>(chunk) * p.q_heads +
                                 static_cast<int64_t>(kv_head) * p.group + head;
        float* out = p.partial_out + out_head * p.head_dim + r * (kDim / 8);
        const float inv_l = Reciprocal(l);  // l >= 1: the max's own weight is in it
        if constexpr (kFactored) {          // m-tiles 2j, 2j + 1 hold dims 32j + 4r .. 4r + 3
          float* row_out = p.partial_out + out_head * p.head_dim + 4 * r;
#pragma unroll
          for (int j = 0; j < kCodeChunks; ++j) {
            const float zero_share = kAsym ? zero_sums[j / kGroupChunks] * inv_l : 0.0f;
            *reinterpret_cast<float4*>(row_out + 32 * j) =
                make_float4(fmaf(st.o[t][2 * j][e], inv_l, zero_share),
                            fmaf(st.o[t][2 * j + 1][e], inv_l, zero_share),
                            fmaf(st.o[t][2 * j][2 + e], inv_l, zero_share),
                            fmaf(st.o[t][2 * j + 1][2 + e], inv_l, zero_share));
          }
        } else if constexpr (kFast) {  // m-tiles 2j, 2j + 1 are 4 consecutive dims of the row
#pragma unroll
          for (int i = 0; i < kDimTiles; i += 2) {
            *reinterpret_cast<float4*>(out + 2 * i) =
                make_float4(st.o[t][i][e] * inv_l, st.o[t][i][2 + e] * inv_l,
                            st.o[t][i + 1][e] * inv_l, st.o[t][i + 1][2 + e] * inv_l);
          }
        } else {
#pragma unroll
          for (int i = 0; i < kDimTiles; ++i) {
            if (r * (kDim / 8) + 2 * i < p.head_dim) {
              *reinterpret_cast<float2*>(out + 2 * i) =
                  make_float2(st.o[t][i][e] * inv_l, st.o[t][i][2 + e] * inv_l);
            }
          }
        }
        if (r == 0) p.partial_lse[out_head] = st.m_run[t][e] + Log2(l);
      }
    }
  }
};

// Resident warps a multiprocessor: 16 (at most 128 registers a thread) for head_dim <= 128
// with up to 8 query heads per KV head; 8 otherwise (more registers).
template <int kDim, int kHeadTiles>
constexpr int kResidentWarps = (kDim <= 128 && kHeadTiles == 1) ? 16 : 8;

// kWarps: warps a block (kMaxWarps, or kWideWarps where kResidentWarps holds two such blocks).
template <int kDim, bool kFast, bool kAsym, int kHeadTiles, bool kBf16Params, int kGroupChunks,
          int kWarps>
__global__ void __launch_bounds__(kWarps * 32, kResidentWarps<kDim, kHeadTiles> / kWarps)
    SplitKvKernel(SplitKernelParams params) {
  SplitKernel<kDim, kFast, kAsym, kHeadTiles, kBf16Params, kGroupChunks>::template Run<kWarps>(
      params);
}

template <int kDim, bool kFast, bool kAsym, int kHeadTiles, bool kBf16Params, int kGroupChunks>
void Describe(void (**fn)(SplitKernelParams), int32_t* smem) {
  *fn = SplitKvKernel<kDim, kFast, kAsym, kHeadTiles, kBf16Params, kGroupChunks, kMaxWarps>;
  *smem = SplitKernel<kDim, kFast, kAsym, kHeadTiles, kBf16Params, kGroupChunks>::kWarpSmemBytes;
}

template <int kDim, bool kFast, bool kAsym, int kGroupChunks>
void DescribeHeads(int head_tiles, bool bf16, void (**fn)(SplitKernelParams), int32_t* smem) {
  if (head_tiles == 1) {
    bf16 ? Describe<kDim, kFast, kAsym, 1, true, kGroupChunks>(fn, smem)
         : Describe<kDim, kFast, kAsym, 1, false, kGroupChunks>(fn, smem);
  } else {  // head_dim 256 with two head tiles would spill on the factored path
    constexpr int kTwoTileGroupChunks = kDim <= 128 ? kGroupChunks : 0;
    bf16 ? Describe<kDim, kFast, kAsym, 2, true, kTwoTileGroupChunks>(fn, smem)
         : Describe<kDim, kFast, kAsym, 2, false, kTwoTileGroupChunks>(fn, smem);
  }
}

// The factored kernels of kDim for group_chunks (1, 2 or 4 chunks a group); false if none fits.
template <int kDim, bool kAsym>
bool DescribeFactored(int group_chunks, int head_tiles, bool bf16, void (**fn)(SplitKernelParams),
                      int32_t* smem) {
  switch (group_chunks) {
    case 1:
      DescribeHeads<kDim, true, kAsym, 1>(head_tiles, bf16, fn, smem);
      return true;
    case 2:
      DescribeHeads<kDim, true, kAsym, 2>(head_tiles, bf16, fn, smem);
      return true;
    case 4:
      if constexpr (kDim >= 128) {
        DescribeHeads<kDim, true, kAsym, 4>(head_tiles, bf16, fn, smem);
        return true;
      }
      return false;
    default:
      return false;
  }
}

// Every runtime choice becomes template constants here; shapes nothing covers are rejected
// by Select before this is reached. group_chunks: 0, or the factored path's chunks per group
// (only with kFast, and at most the row's chunks).
template <int kDim, bool kFast>
void DescribeDim(bool asym, int group_chunks, int head_tiles, bool bf16,
                 void (**fn)(SplitKernelParams), int32_t* smem) {
  if constexpr (kFast) {
    const bool described =
        asym ? DescribeFactored<kDim, true>(group_chunks, head_tiles, bf16, fn, smem)
             : DescribeFactored<kDim, false>(group_chunks, head_tiles, bf16, fn, smem);
    if (described) return;
  }
  asym ? DescribeHeads<kDim, kFast, true, 0>(head_tiles, bf16, fn, smem)
       : DescribeHeads<kDim, kFast, false, 0>(head_tiles, bf16, fn, smem);
}

}  // namespace

void DescribeSplitKernel(int kernel_dim, bool fast, bool asym, int group_chunks, int head_tiles,
                         bool bf16_params, SplitFn* fn, int32_t* warp_smem_bytes) {
  switch (kernel_dim) {
    case 64:
      fast ? DescribeDim<64, true>(asym, group_chunks, head_tiles, bf16_params, fn, warp_smem_bytes)
           : DescribeDim<64, false>(asym, 0, head_tiles, bf16_params, fn, warp_smem_bytes);
      return;
    case 128:
      fast
          ? DescribeDim<128, true>(asym, group_chunks, head_tiles, bf16_params, fn, warp_smem_bytes)
          : DescribeDim<128, false>(asym, 0, head_tiles, bf16_params, fn, warp_smem_bytes);
      return;
    default:
      fast
          ? DescribeDim<256, true>(asym, group_chunks, head_tiles, bf16_params, fn, warp_smem_bytes)
          : DescribeDim<256, false>(asym, 0, head_tiles, bf16_params, fn, warp_smem_bytes);
  }
}

SplitFn WideSplitKernel(bool asym, bool bf16_params) {
  static_assert(kResidentWarps<128, 1> == 2 * kWideWarps);
  if (asym) {
    return bf16_params ? SplitKvKernel<128, true, true, 1, true, 0, kWideWarps>
                       : SplitKvKernel<128, true, true, 1, false, 0, kWideWarps>;
  }
  return bf16_params ? SplitKvKernel<128, true, false, 1, true, 0, kWideWarps>
                     : SplitKvKernel<128, true, false, 1, false, 0, kWideWarps>;
}

}  // namespace int4kv
