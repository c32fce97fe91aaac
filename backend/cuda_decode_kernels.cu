// Split-KV flash decoding over the INT4 cache on tensor cores (mma.sync m16n8k16, fp16
// operands, fp32 accumulation).
//
// One block = one chunk of one row's context x one KV head, 4 warps. Each warp walks 16-token
// tiles of the chunk (warp w takes tiles w, w+4, ...) with its own online softmax, and the
// block merges its 4 warps at the end. Per tile, with lane = 4r + c (r = lane / 4, c = lane % 4):
//
//   S^T[h, t] = sum_k Q[h, k] K[t, k]     A = Q (16 heads x 16 k) held in registers for the
//                                          whole block; B = K^T (16 k x 8 tokens), two n-tiles.
//                                          Lane (r, c) loads its own D/8 code bytes of token
//                                          8j + r's K row; the k order inside a k-step is
//                                          permuted to match (Q is loaded in the same order).
//   O^T[d, h] += sum_t V^T[d, t] P[t, h]  A = V^T (16 dims x 16 tokens), B = P, which is S^T's
//                                          accumulator fragment reused in place. Lane (r, c)
//                                          owns dims [r D/8, (r+1) D/8) and tokens 2c, 2c+1,
//                                          2c+8, 2c+9; it loads D/16 code bytes of each.
//
// Codes go from global memory straight into registers (prefetched one tile ahead), are
// expanded to fp16 pairs with the 0x6400 exponent trick (no float ever touches shared
// memory), scaled, and fed to the tensor cores. Scales (and zero points) of a tile are staged
// in shared memory by cp.async, double-buffered per warp.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "backend/cuda_decode_kernels.h"
#include "common/cuda_check.h"

namespace int4kv {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTile = 16;
constexpr unsigned kFullMask = 0xffffffffu;

// ---- small device helpers --------------------------------------------------------------

__device__ __forceinline__ uint32_t SmemAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

template <int kBytes>
__device__ __forceinline__ void CpAsync(void* smem, const void* global) {
  if constexpr (kBytes == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(SmemAddress(smem)),
                 "l"(global));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(SmemAddress(smem)),
                 "l"(global), "n"(kBytes));
  }
}

__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n"); }

template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

__device__ __forceinline__ void Mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t AsU32(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }
__device__ __forceinline__ __half2 AsHalf2(uint32_t u) { return *reinterpret_cast<__half2*>(&u); }

__device__ __forceinline__ uint32_t PackHalf2(float lo, float hi) {
  return AsU32(__floats2half2_rn(lo, hi));
}

// Low nibbles of bytes 0 and 2 of x as fp16 (1024 + code) in the low and high halves.
__device__ __forceinline__ __half2 LowNibbles(uint32_t x) {
  return AsHalf2((x & 0x000f000fu) | 0x64006400u);
}
// High nibbles of bytes 0 and 2 of x as fp16 (1024 + 16 * code).
__device__ __forceinline__ __half2 HighNibbles(uint32_t x) {
  return AsHalf2((x & 0x00f000f0u) | 0x64006400u);
}

// Dequantizes the low / high nibble pair of x with per-half scales (and zero points).
template <bool kAsym>
__device__ __forceinline__ uint32_t DequantLow(uint32_t x, __half2 scale, __half2 zero) {
  if constexpr (kAsym) {
    return AsU32(__hfma2(__hsub2(LowNibbles(x), __float2half2_rn(1024.0f)), scale, zero));
  } else {
    return AsU32(__hmul2(__hsub2(LowNibbles(x), __float2half2_rn(1031.0f)), scale));
  }
}
template <bool kAsym>
__device__ __forceinline__ uint32_t DequantHigh(uint32_t x, __half2 scale, __half2 zero) {
  const __half2 sixteenth = __float2half2_rn(0.0625f);
  if constexpr (kAsym) {
    const __half2 code = __hfma2(HighNibbles(x), sixteenth, __float2half2_rn(-64.0f));
    return AsU32(__hfma2(code, scale, zero));
  } else {
    const __half2 code = __hfma2(HighNibbles(x), sixteenth, __float2half2_rn(-71.0f));
    return AsU32(__hmul2(code, scale));
  }
}

// ---- the split kernel ------------------------------------------------------------------

template <int kWords>
__device__ __forceinline__ uint32_t SelectWord(const uint32_t (&words)[kWords], int index) {
  if constexpr (kWords == 1) {
    return words[0];
  } else if constexpr (kWords == 2) {
    return index ? words[1] : words[0];
  } else {
    const uint32_t low = (index & 1) ? words[1] : words[0];
    const uint32_t high = (index & 1) ? words[3] : words[2];
    return (index & 2) ? high : low;
  }
}

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
template <int kDim, bool kFast, bool kAsym, int kHeadTiles, bool kBf16Params>
struct SplitKernel {
  static constexpr int kStages = 4;            // per-warp pipeline depth, in tiles
  static constexpr int kKSteps = kDim / 16;    // k-steps of the QK product
  static constexpr int kDimTiles = kDim / 16;  // m-tiles of the PV product
  static constexpr int kKeyBytes = kDim / 8;   // K code bytes a lane reads per token
  static constexpr int kKeyWords = kKeyBytes / 4;
  static constexpr int kValueBytes = kDim / 16;  // V code bytes a lane reads per token
  static constexpr int kValueWords = kValueBytes / 4;
  static constexpr int kRowBytes = kDim / 2;   // staged code row
  static constexpr int kMaxGroups = kDim / 8;  // staged parameter row, in entries
  static constexpr int kParamRowBytes = kMaxGroups * 2;
  static constexpr int kKeyScaleWords = kDim / 64 > 1 ? kDim / 64 : 1;
  static constexpr int kValueScaleWords = kDim / 128 > 1 ? kDim / 128 : 1;
  static constexpr int kParamKinds = kAsym ? 4 : 2;  // K scale, V scale (, K zero, V zero)
  // One stage: K codes [16][kRowBytes], V codes [16][kRowBytes] (rows permuted), then the
  // parameters [kinds][16][kMaxGroups]. Shared memory: Q [16][kDim] fp16, then each warp's
  // kStages stages. After the main loop the same bytes hold the block merge.
  static constexpr int kCodeBytes = kTile * kRowBytes;
  static constexpr int kStageBytes = 2 * kCodeBytes + kParamKinds * kTile * kParamRowBytes;
  static constexpr int kQBytes = 16 * kDim * 2;
  static constexpr int kLoopBytes = kQBytes + kWarps * kStages * kStageBytes;
  static constexpr int kMergeBytes = kWarps * kHeadTiles * 8 * kDim * 4 + 2 * kWarps * 16 * 4;
  static constexpr int kSmemBytes = kLoopBytes > kMergeBytes ? kLoopBytes : kMergeBytes;

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

  // Starts loading one tile into `stage`. slot_reg: lane l holds the slot of tile token
  // l % 16 (slot 0 past the chunk). Ends with one cp.async commit.
  static __device__ __forceinline__ void IssueTile(const SplitKernelParams& p, int kv_head,
                                                   int slot_reg, int lane, uint8_t* stage) {
    const KvLayout& layout = p.cache.layout;
    const int row_bytes = layout.RowBytes();
    const int64_t slot_bytes = layout.DataBytesPerSlot();
    const uint8_t* key_base = p.cache.data +
                              static_cast<int64_t>(p.layer) * layout.num_slots * slot_bytes +
                              static_cast<int64_t>(kv_head) * row_bytes;
    const uint8_t* value_base = key_base + static_cast<int64_t>(layout.kv_heads) * row_bytes;
    uint8_t* stage_k = stage;
    uint8_t* stage_v = stage + kCodeBytes;
    if constexpr (kFast) {
      constexpr int kChunks = kRowBytes / 16;
#pragma unroll
      for (int u0 = 0; u0 < kTile * kChunks; u0 += 32) {
        const int unit = u0 + lane, token = unit / kChunks, chunk = unit % kChunks;
        const int64_t slot = __shfl_sync(kFullMask, slot_reg, token);
        CpAsync<16>(stage_k + KeyOffset(token, chunk), key_base + slot * slot_bytes + chunk * 16);
        CpAsync<16>(stage_v + ValueOffset(ValueRow(token), chunk),
                    value_base + slot * slot_bytes + chunk * 16);
      }
    } else {
      constexpr int kRowWords = kRowBytes / 4;
#pragma unroll 4
      for (int u0 = 0; u0 < kTile * kRowWords; u0 += 32) {
        const int unit = u0 + lane, token = unit / kRowWords, byte = (unit % kRowWords) * 4;
        const int64_t slot = __shfl_sync(kFullMask, slot_reg, token);
        const bool valid = byte < row_bytes;
        const uint32_t k =
            valid ? __ldg(reinterpret_cast<const uint32_t*>(key_base + slot * slot_bytes + byte))
                  : 0u;
        const uint32_t v =
            valid ? __ldg(reinterpret_cast<const uint32_t*>(value_base + slot * slot_bytes + byte))
                  : 0u;
        *reinterpret_cast<uint32_t*>(stage_k + KeyOffset(token, byte / 16) + byte % 16) = k;
        *reinterpret_cast<uint32_t*>(stage_v + ValueOffset(ValueRow(token), byte / 16) +
                                     byte % 16) = v;
      }
    }
    // Parameters: rows of `groups` entries per (kind, token).
    uint8_t* stage_params = stage + 2 * kCodeBytes;
    const int groups = layout.GroupsPerRow();
    const int64_t params_per_slot = layout.ParamsPerSlot();
    const int64_t layer_params = static_cast<int64_t>(p.layer) * layout.num_slots * params_per_slot;
    const int param_bytes = groups * 2;
    if (kFast && param_bytes >= 4) {
      // Units of min(16, row bytes); rows are aligned to their (power-of-two) size.
      const int unit_bytes = param_bytes >= 16 ? 16 : param_bytes;
      const int units_per_row = param_bytes / unit_bytes;
      const int total = kTile * kParamKinds * units_per_row;
      for (int u0 = 0; u0 < total; u0 += 32) {
        const int unit = u0 + lane;
        const int token = (unit / units_per_row) % kTile;
        const int64_t slot = __shfl_sync(kFullMask, slot_reg, token);
        if (unit < total) {
          const int kind = unit / (units_per_row * kTile), part = unit % units_per_row;
          const uint16_t* pool = kind < 2 ? p.cache.scales : p.cache.zeros;
          const int row = (kind & 1) ? layout.kv_heads + kv_head : kv_head;
          const uint16_t* src =
              pool + layer_params + slot * params_per_slot + row * groups + part * (unit_bytes / 2);
          uint8_t* dst = stage_params + (kind * kTile + token) * kParamRowBytes + part * unit_bytes;
          if (unit_bytes == 16) {
            CpAsync<16>(dst, src);
          } else if (unit_bytes == 8) {
            CpAsync<8>(dst, src);
          } else {
            CpAsync<4>(dst, src);
          }
        }
      }
    } else {
      const int total = kTile * kParamKinds * groups;
      for (int u0 = 0; u0 < total; u0 += 32) {
        const int unit = u0 + lane;
        const int token = (unit / groups) % kTile;
        const int64_t slot = __shfl_sync(kFullMask, slot_reg, token);
        if (unit < total) {
          const int kind = unit / (groups * kTile), g = unit % groups;
          const uint16_t* pool = kind < 2 ? p.cache.scales : p.cache.zeros;
          const int row = (kind & 1) ? layout.kv_heads + kv_head : kv_head;
          reinterpret_cast<uint16_t*>(stage_params + (kind * kTile + token) * kParamRowBytes)[g] =
              pool[layer_params + slot * params_per_slot + row * groups + g];
        }
      }
    }
    CpAsyncCommit();
  }

  // Online-softmax state of one warp: heads r (and r + 8) for the statistics; O^T fragments.
  struct WarpState {
    float m_run[kHeadTiles];  // running max, log2 domain
    float l_run[kHeadTiles];  // running sum of 2^(x - m_run), this lane's share
    float o[kHeadTiles][kDimTiles][4];
    __device__ __forceinline__ void Reset() {
#pragma unroll
      for (int t = 0; t < kHeadTiles; ++t) {
        m_run[t] = -INFINITY;
        l_run[t] = 0.0f;
#pragma unroll
        for (int i = 0; i < kDimTiles; ++i) o[t][i][0] = o[t][i][1] = o[t][i][2] = o[t][i][3] = 0;
      }
    }
  };

  // Computes one 16-token tile from its stage.
  static __device__ __forceinline__ void ProcessTile(const SplitKernelParams& p, int end,
                                                     const uint32_t (&qa)[kKSteps][4],
                                                     const uint8_t* stage, int tile_begin, int lane,
                                                     WarpState& st) {
    const int r = lane / 4, c = lane % 4;
    const int log2_gs = p.log2_group_size;
    const uint8_t* stage_k = stage;
    const uint8_t* stage_v = stage + kCodeBytes;
    const uint8_t* stage_params = stage + 2 * kCodeBytes;
    auto param_words = [&](int kind, int token, int first_word, auto& words) {
      const uint8_t* row = stage_params + (kind * kTile + token) * kParamRowBytes;
#pragma unroll
      for (int i = 0; i < static_cast<int>(sizeof(words) / 4); ++i) {
        words[i] = reinterpret_cast<const uint32_t*>(row)[first_word + i];
      }
    };

    // ---- S^T = Q K^T for 16 tokens (two n-tiles of 8); lane (r, c) reads token 8j + r ----
    const int key_dim0 = c * (kDim / 4);
    const int key_word0 = (key_dim0 >> log2_gs) >> 1;  // first parameter word of this lane
    float s[2][4];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int token = 8 * j + r;
      uint32_t codes[kKeyWords];
      LoadShared<kKeyBytes <= 16 ? kKeyBytes : 16>(
          stage_k + KeyOffset(token, key_dim0 / 32) + (key_dim0 / 2) % 16, codes);
      if constexpr (kKeyBytes == 32)
        LoadShared<16>(stage_k + KeyOffset(token, 2 * c + 1), codes + 4);
      uint32_t scales[kKeyScaleWords], zeros[kKeyScaleWords];
      param_words(0, token, key_word0, scales);
      if constexpr (kAsym) param_words(2, token, key_word0, zeros);
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
      for (int w = 0; w < kKeyWords; ++w) {
        const int index = ((key_dim0 + 8 * w) >> log2_gs) - 2 * key_word0;
        const uint32_t selector = (index & 1) ? 0x3232 : 0x1010;  // broadcast one half
        const uint32_t scale_word = SelectWord(scales, index >> 1);
        const __half2 scale2 = ParamPair<kBf16Params>(__byte_perm(scale_word, 0, selector));
        __half2 zero2 = __float2half2_rn(0.0f);
        if constexpr (kAsym) {
          zero2 = ParamPair<kBf16Params>(__byte_perm(SelectWord(zeros, index >> 1), 0, selector));
        }
#pragma unroll
        for (int part = 0; part < 2; ++part) {
          const uint32_t x = codes[w] >> (8 * part);
          Mma(s[j], qa[2 * w + part], DequantLow<kAsym>(x, scale2, zero2),
              DequantHigh<kAsym>(x, scale2, zero2));
        }
      }
    }

    // ---- online softmax (log2 domain) for heads r (c0, c1) and r + 8 (c2, c3) ----
    uint32_t pb[kHeadTiles][2];
    float alpha[kHeadTiles];
#pragma unroll
    for (int t = 0; t < kHeadTiles; ++t) {
      float x[2][2];
      float tile_max = -INFINITY;
#pragma unroll
      for (int j = 0; j < 2; ++j) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int token = tile_begin + 8 * j + 2 * c + e;
          x[j][e] = token < end ? s[j][2 * t + e] * p.scale_log2 : -INFINITY;
          tile_max = fmaxf(tile_max, x[j][e]);
        }
      }
      tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 1));
      tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 2));
      const float m_new = fmaxf(st.m_run[t], tile_max);  // finite: every tile has a token
      alpha[t] = exp2f(st.m_run[t] - m_new);
      st.m_run[t] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const float p0 = exp2f(x[j][0] - m_new), p1 = exp2f(x[j][1] - m_new);
        sum += p0 + p1;
        pb[t][j] = PackHalf2(p0, p1);
      }
      st.l_run[t] = st.l_run[t] * alpha[t] + sum;
    }
    // O^T columns are heads 2c, 2c+1 (+8): fetch their rescale factors from the lanes that
    // own those heads' statistics.
#pragma unroll
    for (int t = 0; t < kHeadTiles; ++t) {
      const float a0 = __shfl_sync(kFullMask, alpha[t], 8 * c);
      const float a1 = __shfl_sync(kFullMask, alpha[t], 8 * c + 4);
#pragma unroll
      for (int i = 0; i < kDimTiles; ++i) {
        st.o[t][i][0] *= a0, st.o[t][i][1] *= a1, st.o[t][i][2] *= a0, st.o[t][i][3] *= a1;
      }
    }

    // ---- O^T += V^T P; lane (r, c) reads tokens 2c, 2c+1, 2c+8, 2c+9, dims [r D/8, ..) ----
    // Tokens past the chunk have P = 0; their V values are zeroed too so that whatever the
    // padding slot holds cannot turn 0 * x into NaN.
    uint32_t keep[2] = {0xffffffffu, 0xffffffffu};  // token pairs (2c, 2c+1), (2c+8, 2c+9)
    if (tile_begin + kTile > end) {
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int t0 = tile_begin + 2 * c + 8 * k;
        keep[k] = (t0 < end ? 0x0000ffffu : 0u) | (t0 + 1 < end ? 0xffff0000u : 0u);
      }
    }
    const int value_dim0 = r * (kDim / 8);
    const int value_word0 = (value_dim0 >> log2_gs) >> 1;
    uint32_t codes[4][kValueWords];
    uint32_t scales[4][kValueScaleWords], zeros[4][kValueScaleWords];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int token = 2 * c + (k & 1) + 8 * (k >> 1);
      const int byte = r * kValueBytes;
      LoadShared<kValueBytes>(stage_v + ValueOffset(ValueRow(token), byte / 16) + byte % 16,
                              codes[k]);
      param_words(1, token, value_word0, scales[k]);
      if constexpr (kAsym) param_words(3, token, value_word0, zeros[k]);
    }
#pragma unroll
    for (int i = 0; i < kDimTiles; ++i) {
      const int word = i / 4, byte = i % 4;
      const int index = ((value_dim0 + 2 * i) >> log2_gs) - 2 * value_word0;
      const uint32_t pair_selector = (index & 1) ? 0x7632 : 0x5410;
      // A fragment registers: (row r, tokens 2c, 2c+1), (row r+8, tokens 2c, 2c+1),
      // (row r, tokens 2c+8, 2c+9), (row r+8, tokens 2c+8, 2c+9); row r is the low nibble.
      uint32_t a[4];
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        uint32_t x =
            __byte_perm(codes[2 * k][word], codes[2 * k + 1][word], byte < 2 ? 0x5410 : 0x7632);
        if (byte & 1) x >>= 8;
        const __half2 scale2 = ParamPair<kBf16Params>(
            __byte_perm(SelectWord(scales[2 * k], index >> 1),
                        SelectWord(scales[2 * k + 1], index >> 1), pair_selector));
        __half2 zero2 = __float2half2_rn(0.0f);
        if constexpr (kAsym) {
          zero2 = ParamPair<kBf16Params>(__byte_perm(SelectWord(zeros[2 * k], index >> 1),
                                                     SelectWord(zeros[2 * k + 1], index >> 1),
                                                     pair_selector));
        }
        a[2 * k] = DequantLow<kAsym>(x, scale2, zero2) & keep[k];
        a[2 * k + 1] = DequantHigh<kAsym>(x, scale2, zero2) & keep[k];
      }
#pragma unroll
      for (int t = 0; t < kHeadTiles; ++t) Mma(st.o[t][i], a, pb[t][0], pb[t][1]);
    }
  }

  static __device__ void Run(const SplitKernelParams& p) {
    const ChunkWork work = p.chunks[blockIdx.x];
    if (work.end <= work.begin) return;
    const int kv_head = blockIdx.y;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int r = lane / 4, c = lane % 4;

    extern __shared__ __align__(16) uint8_t smem[];
    __half* q_smem = reinterpret_cast<__half*>(smem);  // [16][kDim]
    uint8_t* my_stages = smem + kQBytes + warp * kStages * kStageBytes;

    // The first page-table loads go out before anything waits.
    const int32_t* page_row = p.req_to_token + work.request * p.req_to_token_stride;
    const int num_tiles = (work.end - work.begin + kTile - 1) / kTile;
    auto load_slot = [&](int tile) -> int {
      const int token = work.begin + tile * kTile + (lane & 15);
      return (tile < num_tiles && token < work.end) ? __ldg(page_row + token) : 0;
    };
    int first_slots[kStages];
#pragma unroll
    for (int s = 0; s < kStages; ++s) first_slots[s] = load_slot(warp + s * kWarps);

    // Q of this KV head's query heads, as fp16, zero-padded to 16 heads x kDim.
    const int64_t q_first =
        (static_cast<int64_t>(work.row) * p.q_heads + static_cast<int64_t>(kv_head) * p.group) *
        p.head_dim;
    for (int i = threadIdx.x; i < 16 * kDim; i += kThreads) {
      const int h = i / kDim, d = i % kDim;
      float x = 0.0f;
      if (h < p.group && d < p.head_dim) {
        const uint16_t bits = static_cast<const uint16_t*>(p.q)[q_first + h * p.head_dim + d];
        x = p.q_is_bf16 ? __bfloat162float(__ushort_as_bfloat16(bits))
                        : __half2float(__ushort_as_half(bits));
      }
      q_smem[i] = __float2half_rn(x);
    }
    if constexpr (!kFast) {  // parameter entries past the row's groups must read as zero
      for (int i = lane * 4; i < kStages * kStageBytes; i += 32 * 4) {
        *reinterpret_cast<uint32_t*>(my_stages + i) = 0u;
      }
      __syncwarp();
    }
    // Start this warp's pipeline before waiting for Q.
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (warp + s * kWarps < num_tiles) {
        IssueTile(p, kv_head, first_slots[s], lane, my_stages + s * kStageBytes);
      } else {
        CpAsyncCommit();
      }
    }
    int slot_next = first_slots[kStages - 1];
    __syncthreads();

    // Q fragments in the permuted k order of the K reads (see the file comment).
    uint32_t qa[kKSteps][4];
#pragma unroll
    for (int s = 0; s < kKSteps; ++s) {
      const int w = s / 2, part = s % 2;
      const int d = c * (kDim / 4) + 8 * w + 2 * part;
      const __half* q0 = q_smem + r * kDim;
      const __half* q8 = q_smem + (r + 8) * kDim;
      qa[s][0] = AsU32(__halves2half2(q0[d], q0[d + 4]));
      qa[s][2] = AsU32(__halves2half2(q0[d + 1], q0[d + 5]));
      if constexpr (kHeadTiles == 2) {
        qa[s][1] = AsU32(__halves2half2(q8[d], q8[d + 4]));
        qa[s][3] = AsU32(__halves2half2(q8[d + 1], q8[d + 5]));
      } else {
        qa[s][1] = 0u;
        qa[s][3] = 0u;
      }
    }

    WarpState state;
    state.Reset();
    int stage = 0;  // stage of the tile processed next
    for (int tile = warp; tile < num_tiles; tile += kWarps) {
      const int ahead = tile + (kStages - 1) * kWarps;
      const int ahead_stage = stage == 0 ? kStages - 1 : stage - 1;
      if (ahead < num_tiles) {
        IssueTile(p, kv_head, slot_next, lane, my_stages + ahead_stage * kStageBytes);
        slot_next = load_slot(ahead + kWarps);
      } else {
        CpAsyncCommit();  // one group per step keeps wait_group's count right
      }
      CpAsyncWait<kStages - 1>();
      __syncwarp();
      ProcessTile(p, work.end, qa, my_stages + stage * kStageBytes, work.begin + tile * kTile, lane,
                  state);
      __syncwarp();  // this stage is refilled next
      stage = stage == kStages - 1 ? 0 : stage + 1;
    }
    CpAsyncWait<0>();
    float(&m_run)[kHeadTiles] = state.m_run;
    float(&l_run)[kHeadTiles] = state.l_run;
    float(&o)[kHeadTiles][kDimTiles][4] = state.o;

    // ---- merge the 4 warps: stats per head, then O slabs ----
    __syncthreads();  // everyone is done with Q and the stages; reuse shared memory
    float* slab = reinterpret_cast<float*>(smem);           // [kWarps][kHeadTiles * 8][kDim]
    float* warp_m = slab + kWarps * kHeadTiles * 8 * kDim;  // [kWarps][16]
    float* warp_l = warp_m + kWarps * 16;                   // [kWarps][16]
#pragma unroll
    for (int t = 0; t < kHeadTiles; ++t) {
      l_run[t] += __shfl_xor_sync(kFullMask, l_run[t], 1);
      l_run[t] += __shfl_xor_sync(kFullMask, l_run[t], 2);
      if (c == 0) {
        warp_m[warp * 16 + 8 * t + r] = m_run[t];
        warp_l[warp * 16 + 8 * t + r] = l_run[t];
      }
    }
    __syncthreads();
    auto block_max = [&](int head) {
      float m = -INFINITY;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) m = fmaxf(m, warp_m[w * 16 + head]);
      return m;
    };
#pragma unroll
    for (int t = 0; t < kHeadTiles; ++t) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int head = 8 * t + 2 * c + e;
        const float factor = exp2f(warp_m[warp * 16 + head] - block_max(head));  // 0 if idle
        float* dst = slab + (warp * kHeadTiles * 8 + head) * kDim + r * (kDim / 8);
#pragma unroll
        for (int i = 0; i < kDimTiles; ++i) {
          dst[2 * i] = o[t][i][e] * factor;
          dst[2 * i + 1] = o[t][i][2 + e] * factor;
        }
      }
    }
    __syncthreads();
    const int64_t out_head0 =
        static_cast<int64_t>(blockIdx.x) * p.q_heads + static_cast<int64_t>(kv_head) * p.group;
    for (int i = threadIdx.x; i < p.group * p.head_dim; i += kThreads) {
      const int head = i / p.head_dim, d = i % p.head_dim;
      const float m = block_max(head);
      float sum = 0.0f, total = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        sum += slab[(w * kHeadTiles * 8 + head) * kDim + d];
        total += warp_l[w * 16 + head] * exp2f(warp_m[w * 16 + head] - m);
      }
      p.partial_out[(out_head0 + head) * p.head_dim + d] = sum / total;
      if (d == 0) p.partial_lse[out_head0 + head] = m + log2f(total);
    }
  }
};

// Resident blocks a multiprocessor: four (16 warps) for head_dim <= 128 with up to 8 query
// heads per KV head, three with 16, two for head_dim 256.
template <int kDim, bool kFast, bool kAsym, int kHeadTiles, bool kBf16Params>
__global__ void __launch_bounds__(kThreads, kDim <= 128 ? (kHeadTiles == 1 ? 4 : 3) : 2)
    SplitKvKernel(SplitKernelParams params) {
  SplitKernel<kDim, kFast, kAsym, kHeadTiles, kBf16Params>::Run(params);
}

// ---- the merge kernel ------------------------------------------------------------------

__global__ void MergeKernel(MergeKernelParams p) {
  const int row = blockIdx.x, head = blockIdx.y;
  const RowWork work = p.rows[row];
  const int64_t out_base = (static_cast<int64_t>(row) * p.q_heads + head) * p.head_dim;
  float m = -INFINITY;
  for (int k = 0; k < work.num_chunks; ++k) {
    m = fmaxf(m, p.partial_lse[static_cast<int64_t>(work.first_chunk + k) * p.q_heads + head]);
  }
  for (int d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
    float sum = 0.0f, total = 0.0f;
    for (int k = 0; k < work.num_chunks; ++k) {
      const int64_t chunk_head = static_cast<int64_t>(work.first_chunk + k) * p.q_heads + head;
      const float weight = exp2f(p.partial_lse[chunk_head] - m);
      sum += weight * p.partial_out[chunk_head * p.head_dim + d];
      total += weight;
    }
    const float value = work.num_chunks > 0 ? sum / total : 0.0f;  // padded rows: zeros
    if (p.out_is_bf16) {
      static_cast<__nv_bfloat16*>(p.out)[out_base + d] = __float2bfloat16_rn(value);
    } else {
      static_cast<__half*>(p.out)[out_base + d] = __float2half_rn(value);
    }
  }
}

// ---- dispatch ----------------------------------------------------------------------------

template <int kDim, bool kFast, bool kAsym, int kHeadTiles, bool kBf16Params>
void Describe(void (**fn)(SplitKernelParams), int32_t* smem) {
  *fn = SplitKvKernel<kDim, kFast, kAsym, kHeadTiles, kBf16Params>;
  *smem = SplitKernel<kDim, kFast, kAsym, kHeadTiles, kBf16Params>::kSmemBytes;
}

template <int kDim, bool kFast, bool kAsym>
void DescribeHeads(int head_tiles, bool bf16, void (**fn)(SplitKernelParams), int32_t* smem) {
  if (head_tiles == 1) {
    bf16 ? Describe<kDim, kFast, kAsym, 1, true>(fn, smem)
         : Describe<kDim, kFast, kAsym, 1, false>(fn, smem);
  } else {
    bf16 ? Describe<kDim, kFast, kAsym, 2, true>(fn, smem)
         : Describe<kDim, kFast, kAsym, 2, false>(fn, smem);
  }
}

// Every runtime choice becomes template constants here; shapes nothing covers are rejected
// by Select before this is reached.
template <int kDim, bool kFast>
void DescribeDim(bool asym, int head_tiles, bool bf16, void (**fn)(SplitKernelParams),
                 int32_t* smem) {
  asym ? DescribeHeads<kDim, kFast, true>(head_tiles, bf16, fn, smem)
       : DescribeHeads<kDim, kFast, false>(head_tiles, bf16, fn, smem);
}

}  // namespace

absl::StatusOr<DecodeKernels> DecodeKernels::Select(int32_t head_dim, int32_t group, QuantMode mode,
                                                    ParamDtype params) {
  if (group < 1 || group > 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("query heads per KV head = ", group, " is unsupported: must be in [1, 16]"));
  }
  if (head_dim < 8 || head_dim > 256 || head_dim % 8 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("head_dim = ", head_dim,
                     " is unsupported by the cuda backend: must be a multiple of "
                     "8 in [8, 256]"));
  }
  DecodeKernels kernels;
  const bool asym = mode == QuantMode::kAsymmetric;
  const int head_tiles = group > 8 ? 2 : 1;
  const bool bf16 = params == ParamDtype::kBFloat16;
  switch (head_dim) {
    case 64:
      DescribeDim<64, true>(asym, head_tiles, bf16, &kernels.split_, &kernels.smem_bytes_);
      kernels.variant_ = "tuned head_dim 64";
      break;
    case 128:
      DescribeDim<128, true>(asym, head_tiles, bf16, &kernels.split_, &kernels.smem_bytes_);
      kernels.variant_ = "tuned head_dim 128";
      break;
    case 256:
      DescribeDim<256, true>(asym, head_tiles, bf16, &kernels.split_, &kernels.smem_bytes_);
      kernels.variant_ = "tuned head_dim 256";
      break;
    default:
      if (head_dim < 64) {
        DescribeDim<64, false>(asym, head_tiles, bf16, &kernels.split_, &kernels.smem_bytes_);
      } else if (head_dim < 128) {
        DescribeDim<128, false>(asym, head_tiles, bf16, &kernels.split_, &kernels.smem_bytes_);
      } else {
        DescribeDim<256, false>(asym, head_tiles, bf16, &kernels.split_, &kernels.smem_bytes_);
      }
      kernels.variant_ = "generic head_dim";
  }
  CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
      kernels.split_, cudaFuncAttributeMaxDynamicSharedMemorySize, kernels.smem_bytes_));
  int blocks = 0;
  CUDA_RETURN_IF_ERROR(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &blocks, kernels.split_, kThreads, kernels.smem_bytes_));
  kernels.blocks_per_sm_ = blocks;
  return kernels;
}

absl::Status DecodeKernels::LaunchSplit(const SplitKernelParams& params, int32_t capacity,
                                        int32_t kv_heads, CudaStream stream) const {
  split_<<<dim3(capacity, kv_heads), kThreads, smem_bytes_, stream>>>(params);
  return CudaStatus(cudaGetLastError(), "SplitKvKernel launch");
}

absl::Status DecodeKernels::LaunchMerge(const MergeKernelParams& params, int32_t batch,
                                        CudaStream stream) const {
  const int threads = params.head_dim >= 128 ? 128 : 64;
  MergeKernel<<<dim3(batch, params.q_heads), threads, 0, stream>>>(params);
  return CudaStatus(cudaGetLastError(), "MergeKernel launch");
}

}  // namespace int4kv
