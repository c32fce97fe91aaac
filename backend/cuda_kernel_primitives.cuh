// Device helpers of the decode kernels (cuda_split_kernel.cu, cuda_merge_kernel.cu):
// asynchronous copies, tensor-core instructions, special-function math and the INT4 nibble
// expansions. Device code only, for .cu files; every function is inlined into its caller.
#ifndef INT4KV_BACKEND_CUDA_KERNEL_PRIMITIVES_CUH_
#define INT4KV_BACKEND_CUDA_KERNEL_PRIMITIVES_CUH_

#include <cuda_fp16.h>

#include <cstdint>

namespace int4kv {

__device__ __forceinline__ uint32_t SmemAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// cp.async of kBytes (16: bypassing L1). wide_l2: an L2 miss fetches the whole aligned 128
// bytes around the address from DRAM, not only the sectors asked for; the neighbouring rows of
// a slot (other KV heads, read by this block's other warps or the next block) then come from L2.
template <int kBytes>
__device__ __forceinline__ void CpAsync(void* smem, const void* global, bool wide_l2) {
  const uint32_t to = SmemAddress(smem);
  if constexpr (kBytes == 16) {
    if (wide_l2) {
      asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16;\n" ::"r"(to), "l"(global));
    } else {
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(to), "l"(global));
    }
  } else if (wide_l2) {
    asm volatile("cp.async.ca.shared.global.L2::128B [%0], [%1], %2;\n" ::"r"(to), "l"(global),
                 "n"(kBytes));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(to), "l"(global), "n"(kBytes));
  }
}

// A 4-byte load served by L2 and not kept in L1, for reads that may see data the kernel
// before this one is still writing.
__device__ __forceinline__ int32_t LoadThroughL2(const int32_t* global) {
  int32_t value;
  asm volatile("ld.global.cg.s32 %0, [%1];\n" : "=r"(value) : "l"(global));
  return value;
}

__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n"); }

template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// D = A B + (c0, c1, c0, c1): C given by its two columns, as a fragment whose rows r and r + 8
// agree (per-head constants).
__device__ __forceinline__ void MmaFrom(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                        uint32_t b1, float c0, float c1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%10,%11,%10,%11};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(c0), "f"(c1));
}

// Four 8x8 matrices of 16-bit elements from shared memory: lane 8m + i gives the address of
// row i of matrix m (16 bytes), and d[m] receives row lane / 4, elements 2 (lane % 4) and
// 2 (lane % 4) + 1 of it; kTrans: of its transpose (column lane / 4, rows 2 (lane % 4) and
// 2 (lane % 4) + 1).
template <bool kTrans>
__device__ __forceinline__ void LoadMatrices(const uint8_t* row, uint32_t (&d)[4]) {
  const uint32_t address = SmemAddress(row);
  if constexpr (kTrans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(address));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(address));
  }
}

__device__ __forceinline__ void Mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

constexpr int Log2OfPowerOfTwo(int x) { return x <= 1 ? 0 : 1 + Log2OfPowerOfTwo(x / 2); }

// 2^x on the special-function unit alone, results below 2^-126 flushed to zero. exp2f keeps
// such results denormal with a range test and two multiplies around the same instruction (four
// dependent instructions instead of one); softmax weights that small are zero for every use here.
__device__ __forceinline__ float Exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
// 1 / x and log2(x) for normal positive x (softmax sums, which are at least 1), on the
// special-function unit alone: the reciprocal within 1 ulp, the logarithm within about 2^-22
// (far below the fp16 weights and outputs), without the IEEE division's refinement steps and
// slow path, or log2f's denormal handling.
__device__ __forceinline__ float Reciprocal(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float Log2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// a x b + c (a, b 32-bit, c 64-bit) as one PTX wide multiply-add, for row addresses (a lane's
// base + slot x stride). Written as a C++ sum the compiler re-associates it with the pool's
// base and the row's offset and adds those again on every tile; kept whole, the split kernel's
// copies issue about 11 instructions a tile fewer (head_dim 128, from the SASS).
__device__ __forceinline__ const uint8_t* WideMulAdd(uint32_t a, uint32_t b, const uint8_t* c) {
  uint64_t sum;
  asm("mad.wide.u32 %0, %1, %2, %3;"
      : "=l"(sum)
      : "r"(a), "r"(b), "l"(reinterpret_cast<uint64_t>(c)));
  return reinterpret_cast<const uint8_t*>(sum);
}

__device__ __forceinline__ uint32_t AsU32(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }
__device__ __forceinline__ __half2 AsHalf2(uint32_t u) { return *reinterpret_cast<__half2*>(&u); }

__device__ __forceinline__ uint32_t PackHalf2(float lo, float hi) {
  return AsU32(__floats2half2_rn(lo, hi));
}

// (x & mask) | magic in one LOP3; plain C++ spends two, having two immediates.
template <uint32_t kMask>
__device__ __forceinline__ uint32_t AndOr(uint32_t x, uint32_t magic) {
  uint32_t out;
  asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(out) : "r"(x), "n"(kMask), "r"(magic));
  return out;
}

// Low nibbles of bytes 0 and 2 of x as fp16 (1024 + code) in the low and high halves.
__device__ __forceinline__ __half2 LowNibbles(uint32_t x) {
  return AsHalf2(AndOr<0x000f000fu>(x, 0x64006400u));
}
// High nibbles of bytes 0 and 2 of x as fp16 (1024 + 16 * code).
__device__ __forceinline__ __half2 HighNibbles(uint32_t x) {
  return AsHalf2(AndOr<0x00f000f0u>(x, 0x64006400u));
}

// Transposes an 8x8 matrix of 16-bit values held one row per 4 lanes (lane 4i + j holds
// row i, columns 2j and 2j + 1), the layout of mma fragments.
__device__ __forceinline__ uint32_t TransposeHalf8x8(uint32_t x) {
  uint32_t out;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(out) : "r"(x));
  return out;
}

// fp16 pairs as bit patterns, so that no constant is rebuilt by a conversion in the loop.
constexpr uint32_t kHalf1024 = 0x64006400u;       // 1024: the exponent trick's offset
constexpr uint32_t kHalf1031 = 0x64076407u;       // 1024 + 7: offset and symmetric zero code
constexpr uint32_t kHalfSixteenth = 0x2c002c00u;  // 1/16
constexpr uint32_t kHalfMinus64 = 0xd400d400u;    // -(1024 / 16)
constexpr uint32_t kHalfMinus71 = 0xd470d470u;    // -(1024 / 16 + 7)
constexpr uint32_t kHalf1032 = 0x64086408u;       // 1024 + 8: codes centred on 8
constexpr uint32_t kHalfMinus72 = 0xd480d480u;    // -(1024 / 16 + 8)
// Factored path: K codes as fp16 subnormals, each nibble masked in bits 4-7 of its half:
// code x 2^-20, exact. The symmetric zero code in those units, negated, -7 x 2^-20, and the
// unit itself, 2^-20.
constexpr uint32_t kHighNibbleMask = 0x00f000f0u;
constexpr uint32_t kMinusZeroCode = 0x80708070u;
constexpr uint32_t kCodeUnit = 0x00100010u;
// Factored path, asymmetric V: the zero point's term z + 8 s.
constexpr uint32_t kHalfEight = 0x48004800u;  // 8
constexpr float kTwoTo20 = 1048576.0f;
// Factored path: how far a score may exceed its head's running max before the max moves, so
// that a weight P is at most 4 and P sV stays in fp16 wherever the dequantized values do:
// those bound a symmetric sV by 65504 / 7 (codes -7..7; 65504 / 8 where a foreign quantizer
// used code 15) and an asymmetric one by 2 x 65504 / 15, so P sV stays under 35,000. (A slack
// of 3 let P reach 8, and values past 57,316 overflowed: test
// FactoredPathKeepsWeightedValuesNearFp16sLimitFinite.)
constexpr int kFactoredSlack = 2;

// (code - kCentre) of the low / high nibbles of bytes 0 and 2 of x, exact fp16 pairs; kCentre
// 0 (asymmetric), 7 (symmetric) or 8 (the factored path's asymmetric V).
template <int kCentre>
__device__ __forceinline__ __half2 CentredLowNibbles(uint32_t x) {
  static_assert(kCentre == 0 || kCentre == 7 || kCentre == 8, "a centre with its constants");
  constexpr uint32_t kOffset = kCentre == 0 ? kHalf1024 : kCentre == 7 ? kHalf1031 : kHalf1032;
  return __hsub2(LowNibbles(x), AsHalf2(kOffset));
}
template <int kCentre>
__device__ __forceinline__ __half2 CentredHighNibbles(uint32_t x) {
  static_assert(kCentre == 0 || kCentre == 7 || kCentre == 8, "a centre with its constants");
  constexpr uint32_t kOffset = kCentre == 0   ? kHalfMinus64
                               : kCentre == 7 ? kHalfMinus71
                                              : kHalfMinus72;
  return __hfma2(HighNibbles(x), AsHalf2(kHalfSixteenth), AsHalf2(kOffset));
}

// Dequantizes the low / high nibble pair of x with per-half scales (and zero points):
// symmetric (code - 7) * scale, asymmetric code * scale + zero, each rounded once to fp16.
template <bool kAsym>
__device__ __forceinline__ uint32_t DequantLow(uint32_t x, __half2 scale, __half2 zero) {
  if constexpr (kAsym) return AsU32(__hfma2(CentredLowNibbles<0>(x), scale, zero));
  return AsU32(__hmul2(CentredLowNibbles<7>(x), scale));
}
template <bool kAsym>
__device__ __forceinline__ uint32_t DequantHigh(uint32_t x, __half2 scale, __half2 zero) {
  if constexpr (kAsym) return AsU32(__hfma2(CentredHighNibbles<0>(x), scale, zero));
  return AsU32(__hmul2(CentredHighNibbles<7>(x), scale));
}

}  // namespace int4kv

#endif  // INT4KV_BACKEND_CUDA_KERNEL_PRIMITIVES_CUH_
