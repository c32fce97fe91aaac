// GPU tests of the CUDA decode backend against the CPU backend's float64 oracle, run over
// the very same cache bytes. Skips without a CUDA device.
#include "backend/cuda_decode_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "backend/cpu_decode_backend.h"
#include "backend/cuda_decode_kernels.h"
#include "backend/decode_plan.h"
#include "backend/late_table_writer.h"
#include "backend/testing/cuda_assert.h"
#include "backend/testing/oracle_case.h"
#include "common/cuda_check.h"
#include "common/device_memory.h"
#include "gtest/gtest.h"
#include "kv_cache/kv_cache.h"
#include "kv_cache/store_kv.h"
#include "kv_cache/store_kv_cuda.h"

namespace int4kv {
namespace {

BackendOptions Fp16Options() {
  BackendOptions options;
  options.io_dtype = DType::kFloat16;
  return options;
}

// The kernels a backend for case `c` runs.
absl::StatusOr<DecodeKernels> KernelsFor(const Case& c) {
  return DecodeKernels::Select(c.head_dim, c.group, c.kv_heads, c.mode, c.params, c.group_size,
                               c.logit_soft_cap != 0.0f);
}

class CudaDecodeBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  }
  std::mt19937 rng_{2024};
};

const std::vector<int> kMixedLengths = {1, 2, 255, 256, 257, 0, 16, 17, 1000, 4097, 31, 3000};

TEST_F(CudaDecodeBackendTest, SmallMixedBatch) {
  Case c;
  c.lengths = {1, 0, 37, 300};
  RunCase(c, rng_);
}

// Attention in place (out == q), as the header allows: every row, padded ones included, is
// overwritten with its result, and no block reads a query another has already replaced.
TEST_F(CudaDecodeBackendTest, InPlaceRun) {
  for (const int group : {1, 8}) {
    Case c;
    c.group = group;
    c.lengths = {1, 0, 300, 4097, 17};
    c.in_place = true;
    RunCase(c, rng_);
  }
}

// Kernel attributes are process-wide, and one kernel instantiation serves every kv_heads: a
// backend created later with fewer KV heads (a smaller block) must not lower the shared-memory
// limit that an earlier backend's launches need.
TEST_F(CudaDecodeBackendTest, ABackendWithFewerKvHeadsLeavesAnEarlierOneRunning) {
  Case c;
  c.kv_heads = 8;  // blocks of 4 warps
  c.lengths = {300, 17, 1000};
  MirroredCache caches = CachesFor(c, rng_);
  const std::vector<DecodeRow> rows = caches.NewBatch(c.lengths, c.permuted, rng_);
  Case small = c;
  small.kv_heads = 1;  // blocks of 1 warp: the same kernel, a quarter of the shared memory
  small.lengths = {5};
  MirroredCache small_caches = CachesFor(small, rng_);
  std::vector<std::unique_ptr<DecodeAttentionBackend>> later;  // alive while the first runs
  CheckAgainstOracle(c, caches, rows, rng_, [&](cudaStream_t) {
    AttentionShape shape{small.group, 1, small.head_dim, 1, 5, 0};
    auto backend = CreateCudaDecodeBackend(BindingFor(small_caches.device()), shape, Fp16Options());
    ASSERT_TRUE(backend.ok()) << backend.status();
    later.push_back(*std::move(backend));
  });
  EXPECT_EQ(later.size(), 2u);  // created before each layer's Run
}

TEST_F(CudaDecodeBackendTest, TunedHeadDimsAndGqaRatios) {
  for (int head_dim : {64, 128, 256}) {
    for (int group : {1, 2, 4, 8, 16}) {
      Case c;
      c.head_dim = head_dim;
      c.group = group;
      c.kv_heads = group == 16 ? 1 : 2;
      c.lengths = kMixedLengths;
      RunCase(c, rng_);
    }
  }
}

TEST_F(CudaDecodeBackendTest, GenericHeadDims) {
  for (int head_dim : {8, 16, 40, 72, 96, 136, 200}) {
    Case c;
    c.head_dim = head_dim;
    c.group = 2;
    c.kv_heads = 4;
    c.lengths = {1, 2, 255, 256, 257, 0, 700};
    RunCase(c, rng_);
    // A batch of at most 4 rows: a row of hundreds of chunks is merged in groups of 8 float4
    // columns per head (the last group partly past the head for 40, 72, 136 and 200), the
    // short row by one block per head.
    c.lengths = {20000, 0, 257};
    RunCase(c, rng_);
  }
}

// A large batch gives each row a few chunks, so a merge block takes several heads of a row
// (on an H100, 8 for head_dim 64, whose second block of the 12 query heads runs half past
// the last head, and 4 for 72 and 128). Three long rows have far more chunks than such a
// block loads at once, so their heads are merged over many load rounds.
TEST_F(CudaDecodeBackendTest, LargeBatchWithLongRows) {
  for (int head_dim : {64, 128, 72}) {
    Case c;
    c.head_dim = head_dim;
    c.kv_heads = 3;
    c.group = 4;
    for (int i = 0; i < 48; ++i) c.lengths.push_back(kMixedLengths[i % 8]);
    c.lengths[0] = 12000;
    c.lengths[20] = 7000;
    c.lengths[47] = 4000;
    RunCase(c, rng_);
  }
}

TEST_F(CudaDecodeBackendTest, GroupSizesModesAndDtypes) {
  for (int group_size : {8, 16, 32, 64, 128}) {
    for (QuantMode mode : {QuantMode::kSymmetric, QuantMode::kAsymmetric}) {
      for (ParamDtype params : {ParamDtype::kFloat16, ParamDtype::kBFloat16}) {
        for (DType io : {DType::kFloat16, DType::kBFloat16}) {
          Case c;
          c.group_size = group_size;
          c.mode = mode;
          c.params = params;
          c.io = io;
          c.lengths = {1, 2, 255, 256, 257, 0, 1500};
          c.permuted = group_size % 16 == 0;
          RunCase(c, rng_);
        }
      }
    }
  }
}

// The factored path (group sizes 32-128 at the tuned head_dims): every GQA ratio, both modes,
// long and mixed rows, both page-table kinds, both parameter dtypes.
TEST_F(CudaDecodeBackendTest, FactoredPathAcrossShapes) {
  for (int head_dim : {64, 128, 256}) {
    for (int group_size : {32, 64, 128}) {
      if (group_size > head_dim) continue;
      for (int group : {1, 4, 8, 16}) {
        Case c;
        c.mode = group == 1 || group == 16 ? QuantMode::kAsymmetric : QuantMode::kSymmetric;
        c.head_dim = head_dim;
        c.group = group;
        c.group_size = group_size;
        c.kv_heads = group == 16 ? 1 : 3;
        c.params = group == 8 ? ParamDtype::kBFloat16 : ParamDtype::kFloat16;
        c.io = group == 4 ? DType::kBFloat16 : DType::kFloat16;
        c.permuted = group != 1;
        c.lengths = {1, 2, 15, 16, 17, 255, 256, 257, 0, 3000};
        RunCase(c, rng_);
      }
    }
  }
}

// Which split kernel serves a shape: group sizes that span whole 32-dim chunks take the
// factored path at the tuned head_dims, in both modes, but not head_dim 256 with more than 8
// query heads per KV head (two head tiles), nor other head_dims.
TEST_F(CudaDecodeBackendTest, FactoredPathServesGroupsOfWholeChunks) {
  struct Expected {
    int head_dim, group, group_size;
    QuantMode mode;
    const char* variant;
  };
  const QuantMode sym = QuantMode::kSymmetric, asym = QuantMode::kAsymmetric;
  const std::vector<Expected> shapes = {
      {128, 4, 8, sym, "tuned head_dim 128"},
      {128, 4, 16, asym, "tuned head_dim 128"},
      {128, 4, 32, sym, "tuned head_dim 128, factored"},
      {128, 16, 128, asym, "tuned head_dim 128, factored"},
      {64, 1, 64, asym, "tuned head_dim 64, factored"},
      {256, 8, 32, sym, "tuned head_dim 256, factored"},
      {256, 16, 32, sym, "tuned head_dim 256"},
      {96, 4, 32, sym, "generic head_dim"},
  };
  for (const Expected& e : shapes) {
    const absl::StatusOr<DecodeKernels> kernels =
        DecodeKernels::Select(e.head_dim, e.group, 2, e.mode, ParamDtype::kFloat16, e.group_size);
    ASSERT_TRUE(kernels.ok()) << kernels.status();
    EXPECT_STREQ(kernels->variant(), e.variant)
        << "head_dim " << e.head_dim << " G " << e.group << " group_size " << e.group_size << " "
        << QuantModeName(e.mode);
  }
}

// head_dims 64 and 256 with every group size and both modes. Each parameter row size (2 to 64
// bytes a token) has its own copy in the split kernel: at head_dim 256, group 8, a lane copies
// 4 (symmetric) or 8 (asymmetric) 16-byte units of 8 tokens, whose page-table entries it
// shuffles in two rounds; rows under 4 bytes take the 2-byte copies.
TEST_F(CudaDecodeBackendTest, TunedHeadDims64And256WithEveryGroupSizeAndMode) {
  for (int head_dim : {64, 256}) {
    for (int group_size : {8, 16, 32, 64, 128}) {
      if (group_size > head_dim) continue;
      for (QuantMode mode : {QuantMode::kSymmetric, QuantMode::kAsymmetric}) {
        Case c;
        c.head_dim = head_dim;
        c.group_size = group_size;
        c.mode = mode;
        c.lengths = {1, 255, 257, 0, 1500};
        RunCase(c, rng_);
      }
    }
  }
}

TEST_F(CudaDecodeBackendTest, ContiguousAndPermutedPageTablesWithPeakySoftmax) {
  for (bool permuted : {false, true}) {
    Case c;
    c.permuted = permuted;
    c.q_scale = 4.0f;  // scores spread over many units: a few tokens dominate
    c.lengths = kMixedLengths;
    RunCase(c, rng_);
  }
}

// Keys that grow along each row, aligned with q, so that every head's running max keeps
// moving: in the 64-token row by about 10 (log2 domain) a tile, more than the kernel's slack
// of 8, so that every tile rescales what came before; in the 300-token row by about 2 and in
// the 1000-token row by about 0.6, so that weights grow up to 2^8 against a max left behind
// before it moves and the tiles before are rescaled.
// Scores span about 40 in log2 units, yet the element products q_d k_d stay near 4 at most,
// as in the peaky case, so the fp16 rounding of dequantized keys stays inside the tolerance (a
// float64 model of the kernel's roundings gives relative errors of 6e-4 to 8e-4). The output
// is mostly the V of a row's last tokens: a weight left unscaled or a sum missed along the way
// shows at once.
TEST_F(CudaDecodeBackendTest, RunningMaxesThatKeepMoving) {
  for (int group_size : {8, 32}) {  // 32: the factored path
    SCOPED_TRACE(group_size);
    Case c;
    c.group_size = group_size;
    c.lengths = {1000, 300, 64};
    c.constant_q = true;
    c.q_scale = 2.0f;
    MirroredCache caches = CachesFor(c, rng_);
    const std::vector<DecodeRow> rows = caches.NewBatch(c.lengths, c.permuted, rng_);
    std::normal_distribution<float> normal;
    for (size_t b = 0; b < rows.size(); ++b) {
      const int len = c.lengths[b];
      std::vector<float> k(static_cast<size_t>(len) * c.kv_heads * c.head_dim), v(k.size());
      for (size_t i = 0; i < k.size(); ++i) {
        const size_t token = i / (c.kv_heads * c.head_dim);
        k[i] = 1.2f * static_cast<float>(token + 1) / len + 0.25f * normal(rng_);
        v[i] = normal(rng_);
      }
      caches.Store(caches.row_slots(b), k, v);
    }
    CheckAgainstOracle(c, caches, rows, rng_);
  }
}

// Logit soft-capping on every path that applies it: per-element at head_dims 64, 128 and 256
// (one and two head tiles), at the group sizes of the factored path too (32-128), which capped
// shapes do not take (one group a head row goes through the generic path's copies), generic
// head_dims and wide blocks, both modes and parameter dtypes. A cap of 5 over scores of
// q_scale 4 (spread about 4) moves a typical score by a tenth and the largest by far more, so
// that a path ignoring the cap fails at once; every path gets it on some shape. 50 over
// scores of q_scale 1 is Gemma 2's cap on ordinary scores, where it moves only the largest;
// 0.05 leaves weights within e^0.1 of each other; kMaxLogitSoftCap, the largest, is where the
// kernels' capped scores carry their largest error. Outputs and lses against the float64
// oracle, which caps as c x tanh(score / c).
TEST_F(CudaDecodeBackendTest, LogitSoftCapOnEverySplitPath) {
  struct Shape {
    int head_dim, group, group_size, kv_heads;
    QuantMode mode;
    ParamDtype params;
    float cap, q_scale;
  };
  const QuantMode sym = QuantMode::kSymmetric, asym = QuantMode::kAsymmetric;
  const ParamDtype f16 = ParamDtype::kFloat16, bf16 = ParamDtype::kBFloat16;
  const std::vector<Shape> shapes = {
      {128, 4, 8, 2, sym, f16, 5, 4},      {128, 16, 16, 1, asym, bf16, 5, 4},
      {64, 8, 8, 2, asym, f16, 5, 4},      {256, 2, 16, 2, sym, bf16, 5, 4},
      {256, 16, 8, 1, sym, f16, 5, 4},     {128, 4, 32, 2, sym, f16, 50, 1},
      {128, 8, 128, 2, asym, f16, 5, 4},   {64, 1, 64, 3, sym, bf16, 5, 4},
      {256, 2, 64, 2, sym, f16, 0.05f, 1}, {72, 4, 8, 2, sym, f16, 5, 4},
      {96, 2, 32, 2, asym, bf16, 5, 4},    {128, 4, 8, 2, sym, f16, kMaxLogitSoftCap, 4},
      {128, 4, 32, 2, asym, bf16, 50, 1}};
  for (size_t i = 0; i < shapes.size(); ++i) {
    const Shape& shape = shapes[i];
    Case c;
    c.head_dim = shape.head_dim;
    c.group = shape.group;
    c.group_size = shape.group_size;
    c.kv_heads = shape.kv_heads;
    c.mode = shape.mode;
    c.params = shape.params;
    c.io = i % 2 == 0 ? DType::kFloat16 : DType::kBFloat16;
    c.logit_soft_cap = shape.cap;
    c.q_scale = shape.q_scale;
    c.lengths = {1, 17, 255, 0, 257, 3000};
    const absl::StatusOr<DecodeKernels> kernels = KernelsFor(c);
    ASSERT_TRUE(kernels.ok()) << kernels.status();
    EXPECT_EQ(std::string(kernels->variant()).find("factored"), std::string::npos) << Describe(c);
    RunCase(c, rng_);
  }
  // Wide blocks (a batch of kWideSplitMinBatch rows, 8 KV heads), capped hard.
  Case wide;
  wide.kv_heads = 8;
  wide.logit_soft_cap = 5.0f;
  wide.q_scale = 4.0f;
  for (int i = 0; i < kWideSplitMinBatch; ++i) {
    wide.lengths.push_back(std::min(kMixedLengths[i % 12], 1000 - i));
  }
  const absl::StatusOr<DecodeKernels> kernels = KernelsFor(wide);
  ASSERT_TRUE(kernels.ok()) << kernels.status();
  ASSERT_TRUE(kernels->has_wide_blocks());
  RunCase(wide, rng_);
}

// Rows whose tokens' magnitudes differ by up to 2^23 in the same tiles and chunks: K or V
// values of 8192 x N(0, 1) (scales in the thousands, dequantized values in the tens of
// thousands, within fp16's range), of N(0, 1) and of 2^-10 x N(0, 1) (scales below 2^-10,
// many dequantized values below fp16's normal range); then rows of tiny values alone. q is
// small where keys are large, so that no few tokens take all the weight.
TEST_F(CudaDecodeBackendTest, ScalesOfEveryMagnitude) {
  struct Mix {
    const char* what;
    float q_scale;
    std::vector<float> key_factors, value_factors;  // one drawn per token, uniformly
  };
  const std::vector<Mix> mixes = {
      {"large and tiny values", 1.0f, {1.0f, 1.0f, 1.0f / 1024}, {1.0f, 8192.0f, 1.0f / 1024}},
      {"large keys", 1.0f / 4096, {1.0f, 8192.0f}, {1.0f}},
      {"tiny values only", 1.0f, {1.0f / 1024}, {1.0f / 1024}},
  };
  for (const Mix& mix : mixes) {
    for (int group_size : {8, 32, 128}) {  // 32, 128: the factored path
      SCOPED_TRACE(absl::StrCat(mix.what, ", group_size ", group_size));
      Case c;
      c.group_size = group_size;
      // Asymmetric at group 32: the factored path's zero points (large, tiny and mixed).
      if (group_size == 32) c.mode = QuantMode::kAsymmetric;
      c.lengths = {300, 37, 1000, 16};
      c.q_scale = mix.q_scale;
      MirroredCache caches = CachesFor(c, rng_);
      const std::vector<DecodeRow> rows = caches.NewBatch(c.lengths, c.permuted, rng_);
      std::normal_distribution<float> normal;
      const size_t token_values = static_cast<size_t>(c.kv_heads) * c.head_dim;
      for (size_t b = 0; b < rows.size(); ++b) {
        std::vector<float> k(c.lengths[b] * token_values), v(k.size());
        for (int token = 0; token < c.lengths[b]; ++token) {
          const float kf = mix.key_factors[rng_() % mix.key_factors.size()];
          const float vf = mix.value_factors[rng_() % mix.value_factors.size()];
          for (size_t i = token * token_values; i < (token + 1) * token_values; ++i) {
            k[i] = kf * normal(rng_);
            v[i] = vf * normal(rng_);
          }
        }
        caches.Store(caches.row_slots(b), k, v);
      }
      CheckAgainstOracle(c, caches, rows, rng_);
    }
  }
}

// The factored path (group sizes of 32 and more) forms P x sV in fp16, P a softmax weight
// against a running max that moves only past a slack. A token whose score lies just under that
// slack above the max, in a later tile than the one that set it, takes the largest weight the
// slack allows, and with V near fp16's limit (values of +-64,000: sV about 9,144 symmetric,
// 8,536 asymmetric) the product must still be finite. Rows of 32 tokens (one chunk of two
// tiles): keys 0 but for token 16, whose score is 2.95 in log2 units over the others'.
TEST_F(CudaDecodeBackendTest, FactoredPathKeepsWeightedValuesNearFp16sLimitFinite) {
  for (QuantMode mode : {QuantMode::kSymmetric, QuantMode::kAsymmetric}) {
    for (int group_size : {32, 128}) {
      SCOPED_TRACE(absl::StrCat(mode == QuantMode::kSymmetric ? "symmetric" : "asymmetric",
                                ", group_size ", group_size));
      Case c;
      c.mode = mode;
      c.group_size = group_size;
      c.lengths = {32, 32};
      c.constant_q = true;  // every q element 1
      MirroredCache caches = CachesFor(c, rng_);
      const std::vector<DecodeRow> rows = caches.NewBatch(c.lengths, c.permuted, rng_);
      // q . k x log2(e) / sqrt(head_dim) = 2.95 with k constant: k = 2.95 sqrt(d) / (d log2 e).
      const float key = 2.95f * std::sqrt(static_cast<float>(c.head_dim)) /
                        (static_cast<float>(c.head_dim) * 1.4426950f);
      std::normal_distribution<float> normal;
      const size_t token_values = static_cast<size_t>(c.kv_heads) * c.head_dim;
      for (size_t b = 0; b < rows.size(); ++b) {
        std::vector<float> k(c.lengths[b] * token_values, 0.0f), v(k.size());
        for (size_t i = 0; i < v.size(); ++i) v[i] = normal(rng_);
        for (size_t i = 16 * token_values; i < 17 * token_values; ++i) {
          k[i] = key;
          v[i] = i % 2 == 0 ? 64000.0f : -64000.0f;
        }
        caches.Store(caches.row_slots(b), k, v);
      }
      CheckAgainstOracle(c, caches, rows, rng_);
    }
  }
}

// The seed design's fixed grid broke once a sequence needed more blocks than it had. The step
// reads 103,001 tokens of 1.5 KB (158 MB) a layer, more than any L2 holds, so its merge also
// drops each partial from L2 once read (MergeKernelParams::discard_partials); layer 1 then
// reuses the dropped lines.
TEST_F(CudaDecodeBackendTest, LengthsFarBeyondTheSplitCount) {
  Case c;
  c.kv_heads = 8;
  c.group = 4;
  c.lengths = {70000, 1, 33000};
  RunCase(c, rng_);
}

// At group size 8 a step of more tokens than one wave of chunks of kCappedChunkTokens holds is
// cut into chunks of at most that many, run in several waves on a wider grid (decode_plan.h,
// DecodeKernels::max_chunk_tokens): 1.58M tokens over 8 rows, four of them near 400,000. The rows
// read a pool of 65,536 slots through random tables that reuse slots (filling 1.58M distinct ones
// would take most of a minute on the host).
TEST_F(CudaDecodeBackendTest, LargeStepsRunInSeveralWavesOfCappedChunks) {
  Case c;
  c.kv_heads = 8;  // few chunk slots a wave (resident warps / kv_heads): the cap binds sooner
  c.group = 4;
  c.lengths = {400000, 1, 399999, 4097, 0, 380000, 17, 400000};
  const int batch = static_cast<int>(c.lengths.size());
  const int64_t tokens = CaseTokens(c);
  // The plan caps chunks only past (target - batch) x the cap, where target is the backend's
  // chunks a wave (DecodeKernels::ChunksPerWave): this step must be past it here.
  const absl::StatusOr<DecodeKernels> kernels = KernelsFor(c);
  ASSERT_TRUE(kernels.ok()) << kernels.status();
  int device = 0, sms = 0;
  ASSERT_CUDA(cudaGetDevice(&device));
  ASSERT_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t target = kernels->ChunksPerWave(sms, c.kv_heads);
  ASSERT_EQ(kernels->max_chunk_tokens(), kCappedChunkTokens);
  ASSERT_GT(tokens, (target - batch) * kernels->max_chunk_tokens())
      << "the step no longer reaches the chunk cap on this device; lengthen its rows";

  MirroredCache caches(c, batch, 400000, 65536, rng_);
  const RequestTable& table = caches.device().requests();
  std::vector<int32_t> entries(static_cast<size_t>(table.max_requests()) * table.max_seq_len());
  std::uniform_int_distribution<int32_t> slot(1, 65536);
  std::vector<DecodeRow> rows;
  for (int b = 0; b < batch; ++b) {
    rows.push_back({b, c.lengths[b]});
    for (int t = 0; t < c.lengths[b]; ++t) {
      entries[static_cast<size_t>(b) * table.max_seq_len() + t] = slot(rng_);
    }
  }
  CheckTablesAgainstOracle(c, caches, entries, entries, rows, rng_);
}

// The chunk cap follows the split kernel that runs: the factored path (group sizes 32-128 at
// a tuned head_dim) takes none, the per-element path takes kCappedChunkTokens, and generic
// head_dims run the per-element path whatever their group size.
TEST_F(CudaDecodeBackendTest, ChunkCapFollowsTheSplitPath) {
  struct Expect {
    int32_t head_dim, group_size, cap;
    const char* variant;
  };
  for (const Expect& e : {Expect{128, 32, 0, "tuned head_dim 128, factored"},
                          Expect{128, 8, kCappedChunkTokens, "tuned head_dim 128"},
                          Expect{96, 32, kCappedChunkTokens, "generic head_dim"},
                          Expect{160, 32, kCappedChunkTokens, "generic head_dim"}}) {
    const absl::StatusOr<DecodeKernels> kernels = DecodeKernels::Select(
        e.head_dim, 4, 8, QuantMode::kSymmetric, ParamDtype::kFloat16, e.group_size);
    ASSERT_TRUE(kernels.ok()) << kernels.status();
    EXPECT_EQ(kernels->max_chunk_tokens(), e.cap) << "head_dim " << e.head_dim;
    EXPECT_STREQ(kernels->variant(), e.variant) << "head_dim " << e.head_dim;
  }
}

// Steps of kWideSplitMinBatch rows run in blocks of 8 KV heads where the kernel has them: a
// batch of that many mixed rows (up to 1000 tokens) for each wide instantiation (both modes,
// both parameter dtypes), with 8 and 16 KV heads (one and two wide blocks a chunk).
TEST_F(CudaDecodeBackendTest, WideBlocksServeLargeBatches) {
  for (QuantMode mode : {QuantMode::kSymmetric, QuantMode::kAsymmetric}) {
    for (ParamDtype params : {ParamDtype::kFloat16, ParamDtype::kBFloat16}) {
      Case c;
      c.mode = mode;
      c.params = params;
      c.kv_heads = (mode == QuantMode::kSymmetric) == (params == ParamDtype::kFloat16) ? 8 : 16;
      c.group = c.kv_heads == 16 ? 2 : 4;
      c.group_size = params == ParamDtype::kBFloat16 ? 16 : 8;
      c.permuted = mode == QuantMode::kSymmetric;
      for (int i = 0; i < kWideSplitMinBatch; ++i) {
        c.lengths.push_back(std::min(kMixedLengths[i % 12], 1000 - i));
      }
      const absl::StatusOr<DecodeKernels> kernels = KernelsFor(c);
      ASSERT_TRUE(kernels.ok()) << kernels.status();
      ASSERT_TRUE(kernels->has_wide_blocks()) << Describe(c);
      RunCase(c, rng_);
    }
  }
}

// A wide-block step that reads more than kLockstepMinStepBytes of a layer keeps the warps of
// a block whose first tile is scattered in lockstep: symmetric with fp16 scales and 8 KV heads
// (one wide block a chunk), then asymmetric with bf16 scales and 16 (two). Half the rows read
// random slots (their blocks take the barrier), half runs of consecutive ones (theirs do not,
// but where a run wraps round the pool), over a pool of 65,536 slots that the tokens reuse.
// Every fourth row attends a window at its end (DecodeRow.first_token).
TEST_F(CudaDecodeBackendTest, WideBlocksKeepLockstepOnLargeScatteredSteps) {
  for (int kv_heads : {8, 16}) {
    Case c;
    c.kv_heads = kv_heads;
    c.group = kv_heads == 16 ? 2 : 4;
    if (kv_heads == 16) {
      c.mode = QuantMode::kAsymmetric;
      c.params = ParamDtype::kBFloat16;
      c.group_size = 16;
    }
    // 1.125 GiB or more of a layer's attended tokens: 1,536 bytes a slot with 8 KV heads,
    // 3,072 with 16.
    const int row_tokens = kv_heads == 16 ? 8500 : 17000;
    constexpr int kRows = 64;
    static_assert(kRows >= kWideSplitMinBatch, "the step must run in wide blocks");
    for (int b = 0; b < kRows; ++b) c.lengths.push_back(row_tokens + 37 * b);
    c.lengths[5] = 1;
    c.lengths[9] = 0;
    c.lengths[13] = 17;
    SCOPED_TRACE(Describe(c));
    const int batch = static_cast<int>(c.lengths.size());
    const int max_seq_len = *std::max_element(c.lengths.begin(), c.lengths.end());
    constexpr int32_t kPoolSlots = 65536;
    MirroredCache caches(c, batch, max_seq_len, kPoolSlots, rng_);
    const absl::StatusOr<DecodeKernels> kernels = KernelsFor(c);
    ASSERT_TRUE(kernels.ok()) << kernels.status();
    ASSERT_TRUE(kernels->has_wide_blocks());

    const RequestTable& table = caches.device().requests();
    std::vector<int32_t> entries(static_cast<size_t>(table.max_requests()) * table.max_seq_len());
    std::uniform_int_distribution<int32_t> slot(1, kPoolSlots);
    std::vector<DecodeRow> rows;
    for (int b = 0; b < batch; ++b) {
      rows.push_back({b, c.lengths[b]});
      // Every fourth row attends only its last part (a sliding window off tile boundaries).
      if (b % 4 == 3) rows.back().first_token = std::max(0, c.lengths[b] - 1000 - 3 * b);
      const int32_t run_start = slot(rng_);
      for (int t = 0; t < c.lengths[b]; ++t) {
        entries[static_cast<size_t>(b) * table.max_seq_len() + t] =
            b % 2 == 0 ? slot(rng_) : 1 + (run_start - 1 + t) % kPoolSlots;
      }
    }
    int64_t attended = 0;
    for (const DecodeRow& row : rows) attended += row.attended_tokens();
    ASSERT_GE(attended * caches.device().view().BytesPerSlotPerLayer(),
              kLockstepMinStepBytes * 9 / 8)
        << "the step no longer reaches the lockstep size with room to spare; lengthen its rows";
    CheckTablesAgainstOracle(c, caches, entries, entries, rows, rng_);
  }
}

// The batch-invariant mode cuts rows by their own lengths and merges them in a fixed order:
// one chunk a row (a 20,000-token row in one warp's loop), 16 and the most.
TEST_F(CudaDecodeBackendTest, BatchInvariantModeAgreesWithTheOracle) {
  Case c;
  c.kv_heads = 8;
  c.group = 4;
  c.lengths = kMixedLengths;
  c.lengths.push_back(20000);
  for (const int32_t splits : {1, 16, kMaxBatchInvariantSplits}) {
    c.batch_invariant_splits = splits;
    RunCase(c, rng_);
  }
  Case generic;  // head_dim 8, the test model's: the generic kernels and merge
  generic.head_dim = 8;
  generic.lengths = {3000, 0, 1, 257};
  generic.batch_invariant_splits = 16;
  RunCase(generic, rng_);
}

TEST_F(CudaDecodeBackendTest, ReadsCachesWrittenWithLightLlmsTruncation) {
  Case c;
  c.rounding = QuantRounding::kTruncate;
  c.lengths = {1, 513, 2048};
  RunCase(c, rng_);
}

// The split kernel starts each warp's first tile from page-table entries it reads before
// `griddepcontrol.wait`, while the kernel before it may still be writing them, and copies the
// tile again if the entries read after the wait differ. Here the kernel before Run lets it
// launch at once and only 50 us later replaces a table of wrong entries (other slots of the
// pool, negative ones, ones far past the pool) with the right ones: the results must be those
// of the right entries, and no read may leave the pool.
TEST_F(CudaDecodeBackendTest, PageTableRewrittenByTheKernelBeforeRun) {
  Case c;
  c.lengths = {1, 37, 300, 0, 4097, 16, 2000};
  const int64_t tokens = CaseTokens(c);
  MirroredCache caches = CachesFor(c, rng_);
  const std::vector<DecodeRow> rows = caches.NewBatch(c.lengths, true, rng_);
  const RequestTable& table = caches.device().requests();
  const size_t entries = static_cast<size_t>(table.max_requests()) * table.max_seq_len();
  std::vector<int32_t> wrong(entries);
  ASSERT_CUDA(cudaMemcpy(wrong.data(), table.device_table(), entries * 4, cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < entries; ++i) {
    const int32_t right = wrong[i];
    wrong[i] = i % 3 == 0   ? -1 - static_cast<int32_t>(i)
               : i % 3 == 1 ? std::numeric_limits<int32_t>::max() - static_cast<int32_t>(i)
                            : static_cast<int32_t>(right % tokens + 1);  // another slot
  }
  int32_t* right_entries = nullptr;
  ASSERT_CUDA(cudaMalloc(reinterpret_cast<void**>(&right_entries), entries * 4));
  ASSERT_CUDA(
      cudaMemcpy(right_entries, table.device_table(), entries * 4, cudaMemcpyDeviceToDevice));
  // The table's owner offers no writes but SyncToDevice; this test swaps entries under it.
  int32_t* device_table = const_cast<int32_t*>(table.device_table());
  CheckAgainstOracle(c, caches, rows, rng_, [&](cudaStream_t stream) {
    ASSERT_CUDA(
        cudaMemcpyAsync(device_table, wrong.data(), entries * 4, cudaMemcpyHostToDevice, stream));
    ASSERT_CUDA(LaunchLateTableWrite(device_table, right_entries, static_cast<int64_t>(entries),
                                     50000, stream));
  });
  cudaFree(right_entries);
}

// As a model's step runs them: StoreKvCuda writes new K/V into every slot of the batch, and
// Run follows it on the same stream at once. The store lets Run's split kernel launch early
// (programmatic dependent launch) once all the store's blocks have started; that kernel must
// still read the cache only after the whole store has landed. The batch's slots come last in
// a store made long by padding tokens ahead of them (slot 0, zeros), so that they are written
// by the store's last blocks, still running when the split kernel launches; the device cache
// holds other values until then, and the oracle reads the new ones.
TEST_F(CudaDecodeBackendTest, RunRightAfterStoreKvSeesTheStoredRows) {
  Case c;
  c.lengths = {4097, 1, 0, 3000, 300, 16};
  MirroredCache caches = CachesFor(c, rng_);
  const std::vector<DecodeRow> rows = caches.NewBatch(c.lengths, true, rng_);
  constexpr size_t kPaddingTokens = 60000;  // about 14 waves of the store's blocks on an H100
  std::vector<int32_t> batch_slots;
  for (size_t b = 0; b < rows.size(); ++b) {
    batch_slots.insert(batch_slots.end(), caches.row_slots(b).begin(), caches.row_slots(b).end());
  }
  std::vector<int32_t> slots(kPaddingTokens, 0);
  slots.insert(slots.end(), batch_slots.begin(), batch_slots.end());
  const size_t row_values = static_cast<size_t>(c.kv_heads) * c.head_dim;
  std::normal_distribution<float> normal;
  std::vector<float> k(slots.size() * row_values, 0.0f), v(k.size(), 0.0f);
  for (size_t i = kPaddingTokens * row_values; i < k.size(); ++i) {
    k[i] = 3.0f * normal(rng_);
    v[i] = 3.0f * normal(rng_);
  }
  for (int layer = 0; layer < 2; ++layer) {  // the oracle's side only, for now
    const size_t first = kPaddingTokens * row_values;
    ASSERT_TRUE(StoreKvHost(caches.host().view(), layer, batch_slots,
                            KvRows{k.data() + first, v.data() + first, DType::kFloat32, 0})
                    .ok());
  }
  const DeviceBuffer device_slots = CopyToDevice(slots);
  const DeviceBuffer device_k = CopyToDevice(k);
  const DeviceBuffer device_v = CopyToDevice(v);
  int layer = 0;  // CheckAgainstOracle runs layer 0, then layer 1
  CheckAgainstOracle(c, caches, rows, rng_, [&](cudaStream_t stream) {
    ASSERT_TRUE(StoreKvCuda(caches.device().view(), layer++, device_slots.as<int32_t>(),
                            static_cast<int32_t>(slots.size()),
                            KvRows{device_k.get(), device_v.get(), DType::kFloat32, 0}, stream)
                    .ok());
  });
}

// A server that fills its own table (no RequestTable to check rows against) may leave a
// sentinel or a stale value in it. The cuda backend does not check entries; it reads each as
// the nearest slot of the pool, so nothing outside the pools is read (memcheck in
// tools/gpu_validate.sh) and the result is the attention over the clamped slots.
TEST_F(CudaDecodeBackendTest, EntriesOutsideThePoolAreReadAsClampedSlots) {
  Case c;
  c.lengths = {300, 37, 1000, 64};
  MirroredCache caches = CachesFor(c, rng_);
  const std::vector<DecodeRow> rows = caches.NewBatch(c.lengths, true, rng_);
  const RequestTable& table = caches.device().requests();
  const int32_t num_slots = static_cast<int32_t>(caches.host().view().layout.num_slots);
  const size_t entries = static_cast<size_t>(table.max_requests()) * table.max_seq_len();
  std::vector<int32_t> bad(entries);
  ASSERT_CUDA(cudaMemcpy(bad.data(), table.device_table(), entries * 4, cudaMemcpyDeviceToHost));
  std::vector<int32_t> clamped = bad;
  for (const DecodeRow& row : {rows[1], rows[2]}) {
    for (int t = 0; t < row.seq_len; t += 3) {
      const size_t at = static_cast<size_t>(row.request) * table.max_seq_len() + t;
      bad[at] = t % 2 == 0 ? -1 - t : std::numeric_limits<int32_t>::max() - t;
      clamped[at] = t % 2 == 0 ? 0 : num_slots - 1;
    }
    const size_t last = static_cast<size_t>(row.request) * table.max_seq_len() + row.seq_len - 1;
    bad[last] = num_slots;  // one past the pool
    clamped[last] = num_slots - 1;
  }
  CheckTablesAgainstOracle(c, caches, bad, clamped, rows, rng_);
}

// Pools in page-locked host memory, which the kernels read over the bus at the same
// addresses: creation accepts them and the results match the oracle.
TEST_F(CudaDecodeBackendTest, PoolsInPinnedHostMemory) {
  Case c;
  c.lengths = {300, 0, 1000, 17};
  MirroredCache caches = CachesFor(c, rng_);
  const std::vector<DecodeRow> rows = caches.NewBatch(c.lengths, true, rng_);
  const KvCacheView& host_view = caches.host().view();
  const size_t data_bytes = host_view.layout.DataPoolBytes();
  const size_t scale_bytes = host_view.layout.ParamPoolElements() * 2;
  PinnedBuffer data, scales;
  ASSERT_TRUE(data.Allocate(data_bytes, "pinned codes").ok());
  ASSERT_TRUE(scales.Allocate(scale_bytes, "pinned scales").ok());
  std::memcpy(data.get(), host_view.data, data_bytes);
  std::memcpy(scales.get(), host_view.scales, scale_bytes);
  KvCacheBinding pinned = BindingFor(caches.device());
  pinned.view.data = data.as<uint8_t>();
  pinned.view.scales = scales.as<uint16_t>();
  CheckBindingsAgainstOracle(c, caches.host().config(), pinned, BindingFor(caches.host()), rows,
                             rng_);
}

// Rows that attend only the tokens from their first_token on (sliding windows, or the rest of
// a context whose prefix is attended elsewhere) agree with the oracle, lse included: windows
// starting off a tile boundary, of one token, of none, over several chunks; in the step-wide
// plan, the batch-invariant one and wide split blocks.
TEST_F(CudaDecodeBackendTest, RowsAttendFromTheirFirstToken) {
  const std::vector<int> first_tokens = {0, 1, 100, 255, 257, 0, 3, 16, 999, 4000, 30, 1234};
  Case step;
  step.lengths = kMixedLengths;
  Case invariant = step;
  invariant.batch_invariant_splits = 8;
  Case wide;
  wide.kv_heads = 8;
  for (int i = 0; i < kWideSplitMinBatch; ++i) wide.lengths.push_back(kMixedLengths[i % 12]);
  // The factored path (whole 32-dim quantization groups), symmetric and asymmetric.
  Case factored = step;
  factored.group_size = 32;
  Case factored_asymmetric = step;
  factored_asymmetric.group_size = 128;
  factored_asymmetric.mode = QuantMode::kAsymmetric;
  factored_asymmetric.io = DType::kBFloat16;
  for (const Case& c : {step, invariant, wide, factored, factored_asymmetric}) {
    SCOPED_TRACE(Describe(c));
    const absl::StatusOr<DecodeKernels> kernels = KernelsFor(c);
    ASSERT_TRUE(kernels.ok()) << kernels.status();
    EXPECT_STREQ(kernels->variant(),
                 c.group_size >= 32 ? "tuned head_dim 128, factored" : "tuned head_dim 128");
    MirroredCache caches = CachesFor(c, rng_);
    std::vector<DecodeRow> rows = caches.NewBatch(c.lengths, c.permuted, rng_);
    for (size_t i = 0; i < rows.size(); ++i) {
      rows[i].first_token = std::min(
          rows[i].seq_len, first_tokens[i % first_tokens.size()] + static_cast<int>(i / 12));
    }
    CheckAgainstOracle(c, caches, rows, rng_);
  }
}

// Captures RunWithLse once for a bucket (planned for steps[0]) and replays it for every step
// with that step's lengths, fresh page tables and fresh queries; outputs and log-sum-exps are
// checked after every replay.
void ReplayGraph(int bucket, int max_seq_len, const std::vector<std::vector<int>>& steps,
                 std::mt19937& rng) {
  SCOPED_TRACE(absl::StrCat("bucket ", bucket));
  Case c;
  c.kv_heads = 2;
  c.group = 4;
  int64_t capacity = 1;
  for (const std::vector<int>& lengths : steps) {
    capacity = std::max(capacity, std::accumulate(lengths.begin(), lengths.end(), int64_t{0}));
  }
  MirroredCache caches(c, bucket, max_seq_len, capacity, rng);
  AttentionShape shape{8, 2, 128, bucket, max_seq_len, 0};
  BackendOptions options;
  options.io_dtype = DType::kFloat16;
  auto cuda = *CreateCudaDecodeBackend(BindingFor(caches.device()), shape, options);
  BackendOptions oracle_options;
  oracle_options.cpu_float64 = true;
  auto oracle = *CreateCpuDecodeBackend(BindingFor(caches.host()), shape, oracle_options);
  const size_t row_size = 8 * 128, n = bucket * row_size;
  DeviceBuffers buffers(n);
  cudaStream_t stream;
  ASSERT_CUDA(cudaStreamCreate(&stream));

  std::vector<DecodeRow> rows = caches.NewBatch(steps[0], true, rng);
  ASSERT_TRUE(cuda->Plan(rows, stream).ok());
  cudaGraph_t graph;
  // Plan waits on the host: on a capturing stream it is refused and leaves no plan, so a Run
  // in that capture is refused too; the capture itself goes on.
  ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  const absl::Status plan_in_capture = cuda->Plan(rows, stream);
  EXPECT_EQ(plan_in_capture.code(), absl::StatusCode::kFailedPrecondition) << plan_in_capture;
  EXPECT_EQ(cuda->Run(1, buffers.q, buffers.out, stream).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
  ASSERT_CUDA(cudaGraphDestroy(graph));

  ASSERT_TRUE(cuda->Plan(rows, stream).ok());
  DeviceBuffer lse;
  ASSERT_TRUE(lse.Allocate(bucket * 8 * sizeof(float), "the test's lse").ok());
  ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  ASSERT_TRUE(cuda->RunWithLse(1, buffers.q, buffers.out, lse.as<float>(), stream).ok());
  ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec;
  ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));

  for (const std::vector<int>& lengths : steps) {
    rows = caches.NewBatch(lengths, true, rng);
    std::vector<uint16_t> q_bits;
    std::vector<float> q_values;
    RandomQuery(n, DType::kFloat16, 1.0f, rng, &q_bits, &q_values);
    ASSERT_CUDA(cudaMemcpyAsync(buffers.q, q_bits.data(), n * 2, cudaMemcpyHostToDevice, stream));
    ASSERT_CUDA(cudaMemsetAsync(buffers.out, 0xff, n * 2, stream));
    ASSERT_CUDA(cudaMemsetAsync(lse.get(), 0xff, lse.bytes(), stream));
    ASSERT_TRUE(cuda->Plan(rows, stream).ok());
    ASSERT_CUDA(cudaGraphLaunch(exec, stream));
    ASSERT_CUDA(cudaStreamSynchronize(stream));
    std::vector<uint16_t> got(n);
    ASSERT_CUDA(cudaMemcpy(got.data(), buffers.out, n * 2, cudaMemcpyDeviceToHost));
    std::vector<float> got_lse(bucket * 8), want(n), want_lse(got_lse.size());
    ASSERT_CUDA(cudaMemcpy(got_lse.data(), lse.get(), lse.bytes(), cudaMemcpyDeviceToHost));
    ASSERT_TRUE(oracle->Plan(rows, nullptr).ok());
    ASSERT_TRUE(oracle->RunWithLse(1, q_values.data(), want.data(), want_lse.data(), nullptr).ok());
    ExpectClose(got, DType::kFloat16, want, rows, static_cast<int>(row_size), "graph replay");
    ExpectLseClose(got_lse, want_lse, rows, 8, "graph replay");
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST_F(CudaDecodeBackendTest, GraphReplayWithChangingLengthsAndPageTables) {
  ReplayGraph(
      4, 3000,
      {{5, 100, 0, 2999}, {3000, 1, 1, 1}, {0, 0, 0, 17}, {1200, 2400, 256, 257}, {16, 0, 2, 3000}},
      rng_);
  // A bucket of 48 rows: merge blocks take several heads of a row, and the long rows, which
  // move from step to step under the same graph, take them many load rounds.
  const std::vector<std::vector<std::pair<int, int>>> long_rows = {
      {{0, 6000}, {30, 5000}}, {}, {{47, 6000}}, {{3, 6000}, {10, 5000}, {40, 4800}}};
  std::vector<std::vector<int>> steps;
  for (const auto& longs : long_rows) {
    std::vector<int> lengths(48);
    for (int i = 0; i < 48; ++i) lengths[i] = kMixedLengths[i % 8];  // at most 257
    for (const auto& [row, len] : longs) lengths[row] = len;
    steps.push_back(lengths);
  }
  // Every row long: the plan uses about as many chunks as the device holds, where the steps
  // above use few enough for the split kernel to release the merge's launch early; one graph
  // replays steps on both sides of that choice.
  steps.insert(steps.begin() + 2, std::vector<int>(48, 3000));
  ReplayGraph(48, 6000, steps, rng_);
}

// Request 0 with 4 tokens in a cache for 2 requests of up to 8 tokens (16 slots), and the
// shape of a backend over it (8 query heads, 2 KV heads, head_dim 128).
struct OneRequestCache {
  static Case FourTokens() {
    Case c;
    c.lengths = {4};
    return c;
  }
  explicit OneRequestCache(std::mt19937& rng) : caches(request, 2, 8, 16, rng) {
    caches.NewBatch(request.lengths, true, rng);
  }
  const Case request = FourTokens();  // before caches, which it builds
  MirroredCache caches;
  AttentionShape shape{8, 2, 128, 2, 8, 0};
};

// Rows of q read from a wider buffer (a fused QKV output's, K and V after each row's queries)
// and rows of out written into one, whose stride need not keep rows 16-byte aligned: the same
// bits as dense rows on the same plan, lse included, nothing between the rows touched, in
// place too. Cases: narrow merges (2 long rows, factored path), several heads a merge block
// (12 mixed rows), wide split blocks (kWideSplitMinBatch rows, 8 KV heads), the generic
// head_dim path (72) with bf16 io, and the batch-invariant mode.
TEST_F(CudaDecodeBackendTest, RowStridesReadAndWriteInsideWiderBuffers) {
  Case narrow;
  narrow.group_size = 32;
  narrow.lengths = {5000, 4097};
  Case mixed;
  mixed.lengths = kMixedLengths;
  Case wide;
  wide.kv_heads = 8;
  for (int i = 0; i < kWideSplitMinBatch; ++i) wide.lengths.push_back(kMixedLengths[i % 12]);
  Case generic;
  generic.head_dim = 72;
  generic.io = DType::kBFloat16;
  generic.lengths = {300, 0, 17};
  Case invariant;
  invariant.batch_invariant_splits = 16;
  invariant.lengths = {3000, 1, 0, 700};
  for (const Case& c : {narrow, mixed, wide, generic, invariant}) {
    SCOPED_TRACE(Describe(c));
    MirroredCache caches = CachesFor(c, rng_);
    const std::vector<DecodeRow> rows = caches.NewBatch(c.lengths, c.permuted, rng_);
    const int batch = static_cast<int>(rows.size());
    const AttentionShape shape = ShapeFor(caches.device(), c.kv_heads * c.group, batch);
    const int64_t row = int64_t{shape.q_heads} * c.head_dim;
    const int64_t q_stride = row + 2 * c.kv_heads * c.head_dim, out_stride = row + 4;
    // Random queries inside random K/V of a fused buffer, and out's gaps marked.
    std::vector<uint16_t> fused_bits;
    std::vector<float> unused;
    RandomQuery(batch * q_stride, c.io, 1.0f, rng_, &fused_bits, &unused);
    std::vector<uint16_t> dense_q(batch * row);
    for (int b = 0; b < batch; ++b) {
      std::copy_n(fused_bits.data() + b * q_stride, row, dense_q.data() + b * row);
    }
    const std::vector<uint16_t> marked_out(batch * out_stride, 0x7bff);  // fp16 65504
    DeviceBuffer fused = CopyToDevice(fused_bits), strided_out = CopyToDevice(marked_out);
    DeviceBuffer q = CopyToDevice(dense_q), dense_out = CopyToDevice(dense_q);
    // NaN until written: an lse left unwritten compares unequal.
    const std::vector<float> nan_lse(batch * shape.q_heads, std::nanf(""));
    DeviceBuffer dense_lse = CopyToDevice(nan_lse), strided_lse = CopyToDevice(nan_lse);

    BackendOptions options;
    options.io_dtype = c.io;
    options.batch_invariant_splits = c.batch_invariant_splits;
    auto dense = *CreateCudaDecodeBackend(BindingFor(caches.device()), shape, options);
    ASSERT_TRUE(dense->Plan(rows, nullptr).ok());
    ASSERT_TRUE(
        dense->RunWithLse(1, q.get(), dense_out.get(), dense_lse.as<float>(), nullptr).ok());
    options.q_row_stride = q_stride;
    options.out_row_stride = out_stride;
    auto strided = *CreateCudaDecodeBackend(BindingFor(caches.device()), shape, options);
    ASSERT_TRUE(strided->Plan(rows, nullptr).ok());
    ASSERT_TRUE(
        strided->RunWithLse(1, fused.get(), strided_out.get(), strided_lse.as<float>(), nullptr)
            .ok());
    // In place, one stride for both, on a copy of the fused buffer.
    DeviceBuffer in_place = CopyToDevice(fused_bits);
    options.out_row_stride = q_stride;
    auto in_place_backend = *CreateCudaDecodeBackend(BindingFor(caches.device()), shape, options);
    ASSERT_TRUE(in_place_backend->Plan(rows, nullptr).ok());
    ASSERT_TRUE(in_place_backend->Run(1, in_place.get(), in_place.get(), nullptr).ok());
    ASSERT_CUDA(cudaDeviceSynchronize());

    std::vector<uint16_t> want(batch * row), got(marked_out.size()), got_fused(fused_bits.size()),
        got_in_place(fused_bits.size());
    std::vector<float> want_lse(batch * shape.q_heads), got_lse(want_lse.size());
    ASSERT_CUDA(cudaMemcpy(want.data(), dense_out.get(), want.size() * 2, cudaMemcpyDeviceToHost));
    ASSERT_CUDA(cudaMemcpy(got.data(), strided_out.get(), got.size() * 2, cudaMemcpyDeviceToHost));
    ASSERT_CUDA(
        cudaMemcpy(got_fused.data(), fused.get(), got_fused.size() * 2, cudaMemcpyDeviceToHost));
    ASSERT_CUDA(cudaMemcpy(got_in_place.data(), in_place.get(), got_in_place.size() * 2,
                           cudaMemcpyDeviceToHost));
    ASSERT_CUDA(
        cudaMemcpy(want_lse.data(), dense_lse.get(), dense_lse.bytes(), cudaMemcpyDeviceToHost));
    ASSERT_CUDA(
        cudaMemcpy(got_lse.data(), strided_lse.get(), strided_lse.bytes(), cudaMemcpyDeviceToHost));
    EXPECT_EQ(got_fused, fused_bits) << "the fused buffer was written";
    EXPECT_EQ(got_lse, want_lse);
    int mismatches = 0;
    for (int b = 0; b < batch; ++b) {
      for (int64_t i = 0; i < q_stride; ++i) {
        const uint16_t dense_or_fused = i < row ? want[b * row + i] : fused_bits[b * q_stride + i];
        mismatches += got_in_place[b * q_stride + i] != dense_or_fused;
        if (i >= out_stride) continue;
        mismatches += got[b * out_stride + i] != (i < row ? want[b * row + i] : 0x7bff);
      }
    }
    EXPECT_EQ(mismatches, 0);
  }
  // Rows of q must start 16-byte aligned.
  OneRequestCache one(rng_);
  BackendOptions odd = Fp16Options();
  odd.q_row_stride = 8 * 128 + 4;
  const auto refused = CreateCudaDecodeBackend(BindingFor(one.caches.device()), one.shape, odd);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find(
                "BackendOptions.q_row_stride = 1028 is invalid for the cuda backend: must be a "
                "multiple of 8 (16-byte aligned rows)"),
            std::string::npos)
      << refused.status();
}

// A backend belongs to the device current at its creation: Plan and Run with another one
// current refuse (a launch there would fault, or run on the wrong device), and work again
// once the creation device is current.
TEST_F(CudaDecodeBackendTest, PlanAndRunNeedTheCreationDevice) {
  if (CudaDeviceCount() < 2) GTEST_SKIP() << "needs two CUDA devices";
  ASSERT_CUDA(cudaSetDevice(0));
  OneRequestCache one(rng_);
  BackendOptions options;
  options.io_dtype = DType::kFloat16;
  auto cuda = *CreateCudaDecodeBackend(BindingFor(one.caches.device()), one.shape, options);
  DeviceBuffers buffers(8 * 128);
  ASSERT_CUDA(cudaMemset(buffers.q, 0, 8 * 128 * 2));
  const std::vector<DecodeRow> rows = {{0, 4}};
  ASSERT_TRUE(cuda->Plan(rows, nullptr).ok());
  ASSERT_CUDA(cudaSetDevice(1));
  const std::string expected =
      "the cuda backend was created on device 0 but device 1 is current: call cudaSetDevice(0) "
      "first";
  const absl::Status plan = cuda->Plan(rows, nullptr);
  EXPECT_EQ(plan.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(plan.message(), expected);
  const absl::Status run = cuda->Run(0, buffers.q, buffers.out, nullptr);
  EXPECT_EQ(run.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(run.message(), expected);
  ASSERT_CUDA(cudaSetDevice(0));
  EXPECT_TRUE(cuda->Plan(rows, nullptr).ok());
  EXPECT_TRUE(cuda->Run(0, buffers.q, buffers.out, nullptr).ok());
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST_F(CudaDecodeBackendTest, RejectsCpuDtypesAndBadPlans) {
  OneRequestCache one(rng_);
  MirroredCache& caches = one.caches;
  const AttentionShape& shape = one.shape;
  BackendOptions f32;
  EXPECT_EQ(CreateCudaDecodeBackend(BindingFor(caches.device()), shape, f32).status().code(),
            absl::StatusCode::kInvalidArgument);
  BackendOptions options;
  options.io_dtype = DType::kBFloat16;
  // A host cache's pools are pageable host memory the kernels cannot read.
  const auto on_host = CreateCudaDecodeBackend(BindingFor(caches.host()), shape, options);
  ASSERT_FALSE(on_host.ok());
  EXPECT_EQ(on_host.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(on_host.status().message().find("KvCacheBinding.view.data is pageable host memory"),
            std::string::npos)
      << on_host.status();
  // And the cpu backend would dereference a device cache's pools on the host.
  const auto cpu_on_device =
      CreateCpuDecodeBackend(BindingFor(caches.device()), shape, BackendOptions{});
  ASSERT_FALSE(cpu_on_device.ok());
  EXPECT_EQ(cpu_on_device.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(cpu_on_device.status().message().find("KvCacheBinding.view.data is device memory"),
            std::string::npos)
      << cpu_on_device.status();
  // Pools the kernels cannot copy 16 bytes at a time from (a hand-filled binding).
  KvCacheBinding shifted_data = BindingFor(caches.device());
  shifted_data.view.data += 8;
  KvCacheBinding shifted_scales = BindingFor(caches.device());
  shifted_scales.view.scales += 4;  // 8 bytes
  const std::pair<std::string, KvCacheBinding> misaligned_bindings[] = {
      {"view.data", shifted_data}, {"view.scales", shifted_scales}};
  for (const auto& [field, binding] : misaligned_bindings) {
    const auto misaligned_pool = CreateCudaDecodeBackend(binding, shape, options);
    ASSERT_FALSE(misaligned_pool.ok()) << field;
    EXPECT_EQ(misaligned_pool.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(misaligned_pool.status().message());
    EXPECT_NE(message.find("KvCacheBinding." + field + " = 0x"), std::string::npos) << message;
    EXPECT_NE(message.find("is not 16-byte aligned (8 bytes past a boundary)"), std::string::npos)
        << message;
  }
  auto cuda = *CreateCudaDecodeBackend(BindingFor(caches.device()), shape, options);
  // No plan has succeeded yet: Run fails rather than leaving `out` unwritten.
  void* q = nullptr;
  void* out = nullptr;
  ASSERT_EQ(cudaMalloc(&q, 2 * 8 * 128 * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&out, 2 * 8 * 128 * 2), cudaSuccess);
  EXPECT_EQ(cuda->Run(0, q, out, nullptr).code(), absl::StatusCode::kFailedPrecondition);
  const absl::Status too_long = cuda->Plan(std::vector<DecodeRow>{{0, 9}}, nullptr);
  EXPECT_EQ(too_long.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_long.message().find("rows[0].seq_len = 9"), std::string::npos) << too_long;
  const absl::Status too_many = cuda->Plan(std::vector<DecodeRow>{{0, 1}, {1, 1}, {0, 1}}, nullptr);
  EXPECT_EQ(too_many.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_many.message().find("batch of 3 rows exceeds AttentionShape.max_batch (2)"),
            std::string::npos)
      << too_many;
  EXPECT_EQ(cuda->Run(0, q, out, nullptr).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cuda->planned_rows(), -1);
  ASSERT_TRUE(cuda->Plan(std::vector<DecodeRow>{{0, 4}}, nullptr).ok());
  EXPECT_EQ(cuda->planned_rows(), 1);
  // The split kernel reads q 16 bytes at a time.
  const absl::Status misaligned = cuda->Run(0, static_cast<char*>(q) + 8, out, nullptr);
  EXPECT_EQ(misaligned.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(misaligned.message().find("q must be 16-byte aligned on the cuda backend"),
            std::string::npos)
      << misaligned;
  // The merge stores 2-byte elements; an odd out would fault and end the context, which the
  // synchronize and Run below would then report.
  const absl::Status odd_out = cuda->Run(0, q, static_cast<char*>(out) + 1, nullptr);
  EXPECT_EQ(odd_out.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(odd_out.message().find("out must be aligned to its 2-byte elements"), std::string::npos)
      << odd_out;
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_TRUE(cuda->Run(0, q, out, nullptr).ok());
  // The merge stores lse as floats: a misaligned one would fault, and one sharing bytes with
  // out would corrupt it. The planned row's out is out's first 2048 bytes; an lse right after
  // them, in the same allocation, is fine.
  char* out_bytes = static_cast<char*>(out);
  const absl::Status odd_lse =
      cuda->RunWithLse(0, q, out, reinterpret_cast<float*>(out_bytes + 2048 + 2), nullptr);
  EXPECT_EQ(odd_lse.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(odd_lse.message().find("lse must be aligned to its 4-byte elements"), std::string::npos)
      << odd_lse;
  const absl::Status lse_in_out =
      cuda->RunWithLse(0, q, out, reinterpret_cast<float*>(out_bytes + 2044), nullptr);
  EXPECT_EQ(lse_in_out.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(lse_in_out.message().find("overlaps out"), std::string::npos) << lse_in_out;
  float* lse_after_out = reinterpret_cast<float*>(out_bytes + 2048);
  EXPECT_TRUE(cuda->RunWithLse(0, q, out, lse_after_out, nullptr).ok());
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  float lse[8];
  ASSERT_CUDA(cudaMemcpy(lse, lse_after_out, sizeof(lse), cudaMemcpyDeviceToHost));
  for (float x : lse) EXPECT_TRUE(std::isfinite(x)) << x;
  // A failed Plan leaves no plan: the next step's Run does not run this step's rows.
  EXPECT_FALSE(cuda->Plan(std::vector<DecodeRow>{{0, 9}}, nullptr).ok());
  EXPECT_EQ(cuda->planned_rows(), -1);
  const absl::Status stale = cuda->Run(0, q, out, nullptr);
  EXPECT_EQ(stale.code(), absl::StatusCode::kFailedPrecondition) << stale;
  EXPECT_EQ(stale.message(), kRunWithoutPlan);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaFree(q);
  cudaFree(out);
}

// A one-layer cache of 2 KV heads (head_dim 128), 8 tokens a request, 16 slots.
KvCacheConfig TinyConfig(int32_t max_requests) {
  KvCacheConfig config;
  config.num_layers = 1;
  config.kv_heads = 2;
  config.head_dim = 128;
  config.max_requests = max_requests;
  config.max_seq_len = 8;
  config.capacity_slots = 16;
  return config;
}

// memory() reports what creation allocated: the device's free memory drops by that much (each
// allocation rounded up to the driver's granularity at most) while the backend lives, and
// comes back when it is destroyed. The device bytes beyond the pinned staging area's mirror
// are the partial outputs and lses, 4 x q_heads x (head_dim + 1) bytes a chunk slot, with at
// least a slot a row.
TEST(CudaDecodeBackendMemoryTest, MemoryReportsWhatCreationAllocated) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(7);
  Case c;
  c.kv_heads = 8;
  c.lengths = {16};
  constexpr int kMaxBatch = 128, kMaxSeqLen = 65536;
  MirroredCache caches(c, kMaxBatch, kMaxSeqLen, 16, rng);
  const AttentionShape shape = ShapeFor(caches.device(), 32, kMaxBatch);
  // A first backend loads the kernels' modules, whose memory is not the backend's.
  ASSERT_TRUE(CreateCudaDecodeBackend(BindingFor(caches.device()), shape, Fp16Options()).ok());
  auto free_bytes = [] {
    size_t free = 0, total = 0;
    EXPECT_EQ(cudaMemGetInfo(&free, &total), cudaSuccess);
    return static_cast<int64_t>(free);
  };
  const int64_t before = free_bytes();
  auto backend = *CreateCudaDecodeBackend(BindingFor(caches.device()), shape, Fp16Options());
  const int64_t during = free_bytes();
  const BackendMemory memory = backend->memory();
  backend.reset();
  const int64_t after = free_bytes();
  constexpr int64_t kRounding = 3 * (int64_t{2} << 20);  // three device allocations
  EXPECT_GE(before - during, memory.device_bytes);
  EXPECT_LE(before - during, memory.device_bytes + kRounding);
  EXPECT_LE(before - after, kRounding / 3) << "not all of it came back";
  const int64_t slot_bytes = 4 * int64_t{shape.q_heads} * (shape.head_dim + 1);
  const int64_t partial_bytes = memory.device_bytes - memory.pinned_host_bytes;
  EXPECT_EQ(partial_bytes % slot_bytes, 0) << partial_bytes;
  EXPECT_GE(partial_bytes / slot_bytes, kMaxBatch);
  EXPECT_GT(memory.pinned_host_bytes, 0);
  std::printf("device %lld bytes (%lld chunk slots), pinned %lld bytes\n",
              static_cast<long long>(memory.device_bytes),
              static_cast<long long>(partial_bytes / slot_bytes),
              static_cast<long long>(memory.pinned_host_bytes));
}

// The kernels read the device mirror of req_to_token. A reused request row's mirror still
// holds the previous request's slots until SyncToDevice, so Plan refuses rows past what the
// mirror has of their request (before, such a row attended the previous request's K/V).
TEST(CudaDecodeBackendDeviceTableTest, PlanNeedsTheRowsSyncedToTheDevice) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  auto cache = *KvCache::Create(TinyConfig(1), MemoryKind::kDevice);
  auto cuda = *CreateCudaDecodeBackend(BindingFor(*cache), ShapeFor(*cache, 8, 1), Fp16Options());
  RequestTable& table = cache->requests();
  int32_t request = *table.AllocateRequest();
  ASSERT_TRUE(table.Append(request, {7, 8}).ok());
  ASSERT_TRUE(table.SyncToDevice(nullptr).ok());
  ASSERT_TRUE(cuda->Plan(std::vector<DecodeRow>{{request, 2}}, nullptr).ok());
  ASSERT_TRUE(table.FreeRequest(request).ok());
  request = *table.AllocateRequest();  // the same row: its mirror still says 7, 8
  ASSERT_TRUE(table.Append(request, {3}).ok());
  const absl::Status unsynced = cuda->Plan(std::vector<DecodeRow>{{request, 1}}, nullptr);
  EXPECT_EQ(unsynced.code(), absl::StatusCode::kFailedPrecondition) << unsynced;
  EXPECT_NE(unsynced.message().find("rows[0].seq_len = 1 exceeds the 0 tokens"), std::string::npos)
      << unsynced;
  EXPECT_NE(unsynced.message().find("SyncToDevice"), std::string::npos) << unsynced;
  ASSERT_TRUE(table.SyncToDevice(nullptr).ok());
  EXPECT_TRUE(cuda->Plan(std::vector<DecodeRow>{{request, 1}}, nullptr).ok());
}

// The kernels run on the device current at creation: a cache on another device is refused,
// naming the pool, rather than read across devices.
TEST(CudaDecodeBackendTwoDeviceTest, RefusesACacheOnAnotherDevice) {
  if (CudaDeviceCount() < 2) GTEST_SKIP() << "needs two CUDA devices";
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  auto cache = *KvCache::Create(TinyConfig(1), MemoryKind::kDevice);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  const auto elsewhere =
      CreateCudaDecodeBackend(BindingFor(*cache), ShapeFor(*cache, 8, 1), Fp16Options());
  EXPECT_EQ(elsewhere.status().code(), absl::StatusCode::kInvalidArgument) << elsewhere.status();
  EXPECT_NE(elsewhere.status().message().find(
                "KvCacheBinding.view.data is memory of device 1: the cuda backend runs on the "
                "current device, 0"),
            std::string::npos)
      << elsewhere.status();
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  {
    const auto same_device =
        CreateCudaDecodeBackend(BindingFor(*cache), ShapeFor(*cache, 8, 1), Fp16Options());
    EXPECT_TRUE(same_device.ok()) << same_device.status();
  }
  cache.reset();
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
}

// Options out of range (batch_invariant_splits, and the cpu backend's cpu_threads) are refused
// by name, before any device is looked for.
TEST(CudaDecodeBackendOptionsTest, OptionsOutOfRangeAreRefused) {
  auto cache = *KvCache::Create(TinyConfig(2), MemoryKind::kHost);
  for (const int32_t splits : {-1, kMaxBatchInvariantSplits + 1}) {
    BackendOptions options = Fp16Options();
    options.batch_invariant_splits = splits;
    const auto cuda = CreateCudaDecodeBackend(BindingFor(*cache), ShapeFor(*cache, 8, 2), options);
    EXPECT_EQ(cuda.status().code(), absl::StatusCode::kInvalidArgument) << cuda.status();
    EXPECT_NE(cuda.status().message().find(
                  absl::StrCat("BackendOptions.batch_invariant_splits = ", splits,
                               " is out of range: must be 0 (off) or in [1, 1024]")),
              std::string::npos)
        << cuda.status();
  }
  // So is the cpu backend's field, so that options refused by one backend are not silently
  // taken by the other.
  for (const int32_t threads : {-7, kMaxCpuThreads + 1}) {
    BackendOptions options = Fp16Options();
    options.cpu_threads = threads;
    const auto cuda = CreateCudaDecodeBackend(BindingFor(*cache), ShapeFor(*cache, 8, 2), options);
    EXPECT_EQ(cuda.status().code(), absl::StatusCode::kInvalidArgument) << cuda.status();
    EXPECT_NE(cuda.status().message().find(absl::StrCat("BackendOptions.cpu_threads = ", threads)),
              std::string::npos)
        << cuda.status();
  }
}

// Without a device, asking for the cuda backend says so, whatever the binding.
TEST(CudaDecodeBackendWithoutDeviceTest, CreationIsAFailedPrecondition) {
  if (CudaDeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present";
  auto cache = *KvCache::Create(TinyConfig(2), MemoryKind::kHost);
  const auto cuda =
      CreateCudaDecodeBackend(BindingFor(*cache), ShapeFor(*cache, 8, 2), Fp16Options());
  EXPECT_EQ(cuda.status().code(), absl::StatusCode::kFailedPrecondition) << cuda.status();
  EXPECT_NE(cuda.status().message().find("needs a CUDA device; none found"), std::string::npos)
      << cuda.status();
}

}  // namespace
}  // namespace int4kv
