// GPU test support: a decode case (shape, cache format, lengths) run on the CUDA backend over a
// device cache and checked against the CPU backend's float64 oracle over a host cache holding
// the very same bytes and page tables.
#ifndef INT4KV_BACKEND_TESTING_ORACLE_CASE_H_
#define INT4KV_BACKEND_TESTING_ORACLE_CASE_H_

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "backend/decode_attention_backend.h"
#include "common/device_memory.h"
#include "gtest/gtest.h"
#include "kv_cache/kv_cache.h"
#include "kv_cache/store_kv.h"

namespace int4kv {

// One case: the attention and cache shape, the batch's lengths and how the run is made.
struct Case {
  int head_dim = 128;
  int kv_heads = 2;
  int group = 4;  // query heads per KV head
  int group_size = 8;
  QuantMode mode = QuantMode::kSymmetric;
  ParamDtype params = ParamDtype::kFloat16;
  DType io = DType::kFloat16;
  std::vector<int> lengths;
  bool permuted = true;
  QuantRounding rounding = QuantRounding::kNearestEven;
  float q_scale = 1.0f;
  bool in_place = false;    // Run with out == q
  bool constant_q = false;  // every q element q_scale (exactly representable) instead of random
  int32_t batch_invariant_splits = 0;  // BackendOptions.batch_invariant_splits
  float logit_soft_cap = 0;            // AttentionShape.logit_soft_cap
};

// `c` in one line, for failure messages.
std::string Describe(const Case& c);

// Two caches with identical bytes and page tables: one in host memory (for the oracle),
// one in device memory (for the kernel). The pool holds `capacity_slots` slots, every one of
// them filled with random K/V.
class MirroredCache {
 public:
  MirroredCache(const Case& c, int max_batch, int max_seq_len, int64_t capacity_slots,
                std::mt19937& rng)
      : case_(c) {
    KvCacheConfig config;
    config.num_layers = 2;
    config.kv_heads = c.kv_heads;
    config.head_dim = c.head_dim;
    config.group_size = c.group_size;
    config.quant_mode = c.mode;
    config.param_dtype = c.params;
    config.max_requests = max_batch;
    config.max_seq_len = max_seq_len;
    config.capacity_slots = capacity_slots;
    host_ = *KvCache::Create(config, MemoryKind::kHost);
    device_ = *KvCache::Create(config, MemoryKind::kDevice);
    // Random K/V in every slot (slot 0 too: padded rows must not read it into results).
    const int64_t slots = config.capacity_slots + 1;
    std::normal_distribution<float> normal;
    const int64_t chunk = 4096;
    std::vector<float> k(chunk * c.kv_heads * c.head_dim), v(k.size());
    std::vector<int32_t> ids(chunk);
    for (int64_t first = 0; first < slots; first += chunk) {
      const int64_t n = std::min(chunk, slots - first);
      for (float& x : k) x = normal(rng);
      for (float& x : v) x = normal(rng);
      std::iota(ids.begin(), ids.begin() + n, static_cast<int32_t>(first));
      for (int layer = 0; layer < 2; ++layer) {
        EXPECT_TRUE(StoreKvHost(host_->view(), layer, absl::MakeConstSpan(ids.data(), n),
                                KvRows{k.data(), v.data(), DType::kFloat32, 0}, c.rounding)
                        .ok());
      }
    }
    CopyPoolsToDevice();
  }

  // Stores K/V rows [slots.size(), kv_heads, head_dim] (float32) into `slots` of both layers
  // of the host cache, then copies its pools to the device cache.
  void Store(absl::Span<const int32_t> slots, const std::vector<float>& k,
             const std::vector<float>& v) {
    for (int layer = 0; layer < 2; ++layer) {
      EXPECT_TRUE(StoreKvHost(host_->view(), layer, slots,
                              KvRows{k.data(), v.data(), DType::kFloat32, 0}, case_.rounding)
                      .ok());
    }
    CopyPoolsToDevice();
  }

  // Replaces all requests with new ones of `lengths` tokens on fresh page tables.
  std::vector<DecodeRow> NewBatch(const std::vector<int>& lengths, bool permuted,
                                  std::mt19937& rng) {
    for (KvCache* cache : {host_.get(), device_.get()}) {
      for (int32_t r = 0; r < cache->requests().max_requests(); ++r) {
        if (cache->requests().IsLive(r)) {
          EXPECT_TRUE(cache->requests().FreeRequest(r).ok());
        }
      }
    }
    std::vector<int32_t> pool(host_->config().capacity_slots);
    std::iota(pool.begin(), pool.end(), 1);
    if (permuted) std::shuffle(pool.begin(), pool.end(), rng);
    std::vector<DecodeRow> rows;
    row_slots_.clear();
    size_t next = 0;
    for (int len : lengths) {
      const std::vector<int32_t>& slots =
          row_slots_.emplace_back(pool.begin() + next, pool.begin() + next + len);
      next += len;
      const int32_t request = *host_->requests().AllocateRequest();
      EXPECT_EQ(*device_->requests().AllocateRequest(), request);
      EXPECT_TRUE(host_->requests().Append(request, slots).ok());
      EXPECT_TRUE(device_->requests().Append(request, slots).ok());
      rows.push_back({request, len});
    }
    EXPECT_TRUE(device_->requests().SyncToDevice(nullptr).ok());
    return rows;
  }

  KvCache& host() { return *host_; }
  KvCache& device() { return *device_; }
  // The slots of row `row` of the last NewBatch, in token order.
  const std::vector<int32_t>& row_slots(size_t row) const { return row_slots_[row]; }

 private:
  void CopyPoolsToDevice() {
    const KvLayout& layout = host_->view().layout;
    EXPECT_EQ(cudaMemcpy(device_->view().data, host_->view().data, layout.DataPoolBytes(),
                         cudaMemcpyHostToDevice),
              cudaSuccess);
    EXPECT_EQ(cudaMemcpy(device_->view().scales, host_->view().scales,
                         layout.ParamPoolElements() * 2, cudaMemcpyHostToDevice),
              cudaSuccess);
    if (case_.mode == QuantMode::kAsymmetric) {
      EXPECT_EQ(cudaMemcpy(device_->view().zeros, host_->view().zeros,
                           layout.ParamPoolElements() * 2, cudaMemcpyHostToDevice),
                cudaSuccess);
    }
  }

  Case case_;
  std::unique_ptr<KvCache> host_, device_;
  std::vector<std::vector<int32_t>> row_slots_;  // per row of the last NewBatch
};

// Device q and out buffers of n 16-bit elements each, freed with this object.
struct DeviceBuffers {
  uint16_t* q = nullptr;
  uint16_t* out = nullptr;
  size_t count = 0;
  explicit DeviceBuffers(size_t n) : count(n) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&q), n * 2), cudaSuccess);
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&out), n * 2), cudaSuccess);
  }
  ~DeviceBuffers() {
    cudaFree(q);
    cudaFree(out);
  }
};

// A device copy of `host` (empty if the copy fails, which the test reports).
template <typename T>
DeviceBuffer CopyToDevice(const std::vector<T>& host) {
  DeviceBuffer device;
  const size_t bytes = host.size() * sizeof(T);
  EXPECT_TRUE(device.Allocate(bytes, "a test input").ok());
  EXPECT_EQ(cudaMemcpy(device.get(), host.data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
  return device;
}

// Random q in the io dtype (host bits and their exact float values).
void RandomQuery(size_t n, DType io, float scale, std::mt19937& rng, std::vector<uint16_t>* bits,
                 std::vector<float>* values);

// Checks the device output against the oracle row by row: no NaN, rows that attend nothing
// (attended_tokens() == 0) exactly zero,
// and a relative error (norm of the difference over the norm of the oracle's row) of at most
// 2e-3 beyond what rounding the exact result to the io dtype costs by itself. That rounding
// is about 2e-4 of a row for fp16 but 1.7e-3 for bf16 (8 significant bits), and 1.98e-3 was
// measured on a one-token row (256 distinct values), so a plain 2e-3 bound would measure
// the dtype rather than the kernel; and rounding the oracle too does not help, since a
// kernel error far below a bf16 step still moves some outputs a whole step.
void ExpectClose(const std::vector<uint16_t>& got_bits, DType io, const std::vector<float>& want,
                 const std::vector<DecodeRow>& rows, int row_size, const std::string& what);

// Checks the device's log-sum-exps against the oracle's ([rows][q_heads] each): exactly -inf
// for rows that attend nothing, finite elsewhere and within kLseAbsoluteError + kLseRelativeError x
// |oracle|. The kernels round each dequantized key to fp16, which moves a score by up to about
// 2^-11 of softmax_scale x sum_d |q_d k_d|, and an lse by a weighted mean of such moves: in a
// float64 model of that rounding, one-token rows with q of 4 x N(0, 1) and K of N(0, 1) at
// head_dim 128 (the peaky-softmax test) moved by up to 3.6e-3 (3.1e-3 of 1 + |lse|) over 2,000
// draws. On an H200 that test reached 0.39 of the bound, every other oracle test 0.11 at most
// (docs/ACCURACY.md). An lse in log2 units, or another head's, is far outside the bound.
constexpr double kLseAbsoluteError = 5e-3;
constexpr double kLseRelativeError = 1e-3;
void ExpectLseClose(const std::vector<float>& got, const std::vector<float>& want,
                    const std::vector<DecodeRow>& rows, int q_heads, const std::string& what);

// Runs both layers of case `c` over `rows` on the CUDA backend reading `device`, on a stream
// of its own, and checks them against the float64 oracle reading `host` (the host mirror of
// a cache of `config`). before_run, when set, is enqueued on that stream between Plan and Run.
// Layer 1 also runs through RunWithLse: the same output bits, and the oracle's log-sum-exps.
void CheckBindingsAgainstOracle(const Case& c, const KvCacheConfig& config,
                                const KvCacheBinding& device, const KvCacheBinding& host,
                                const std::vector<DecodeRow>& rows, std::mt19937& rng,
                                const std::function<void(cudaStream_t)>& before_run = nullptr);

// CheckBindingsAgainstOracle over the bindings of `caches`.
void CheckAgainstOracle(const Case& c, MirroredCache& caches, const std::vector<DecodeRow>& rows,
                        std::mt19937& rng,
                        const std::function<void(cudaStream_t)>& before_run = nullptr);

// CheckBindingsAgainstOracle over the pools of `caches` read through explicit page tables
// instead of their request tables: `device_entries` (copied to the device) for the kernel and
// `host_entries` for the oracle, each [max_requests][max_seq_len] of the caches' config.
void CheckTablesAgainstOracle(const Case& c, MirroredCache& caches,
                              const std::vector<int32_t>& device_entries,
                              const std::vector<int32_t>& host_entries,
                              const std::vector<DecodeRow>& rows, std::mt19937& rng);

// The tokens of a case's batch (at least 1, as a pool size).
int64_t CaseTokens(const Case& c);

// Caches for case `c`: max_batch its row count, max_seq_len its longest row, and a pool of
// just the batch's tokens (filling it is most of a case's time).
MirroredCache CachesFor(const Case& c, std::mt19937& rng);

// Builds caches for case `c`, gives them a batch of its lengths and checks it against the
// oracle.
void RunCase(const Case& c, std::mt19937& rng);

}  // namespace int4kv

#endif  // INT4KV_BACKEND_TESTING_ORACLE_CASE_H_
