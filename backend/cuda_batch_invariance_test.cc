// GPU tests of the cuda backend's batch-invariant mode (BackendOptions.batch_invariant_splits):
// a row's output has the same bits alone and in any batch, run eagerly or replayed from a CUDA
// graph. Skips without a CUDA device. The mode's agreement with the float64 oracle is tested
// in cuda_decode_backend_test.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "backend/bench_page_tables.h"
#include "backend/cuda_decode_backend.h"
#include "backend/cuda_decode_kernels.h"
#include "backend/testing/cuda_assert.h"
#include "common/cuda_check.h"
#include "common/device_memory.h"
#include "common/half.h"
#include "gtest/gtest.h"
#include "kv_cache/kv_cache.h"
#include "kv_cache/store_kv_cuda.h"

namespace int4kv {
namespace {

struct Shape {
  int kv_heads = 8;
  int group = 4;  // query heads per KV head
  int head_dim = 128;
  int row_size() const { return kv_heads * group * head_dim; }  // q or out elements of a row
};

// A one-layer device cache with one live request per entry of `lengths` (request i holds
// lengths[i] tokens on slots drawn at random from the whole pool) and random K/V in every slot.
std::unique_ptr<KvCache> RandomCache(const Shape& shape, const std::vector<int>& lengths,
                                     std::mt19937& rng) {
  KvCacheConfig config;
  config.num_layers = 1;
  config.kv_heads = shape.kv_heads;
  config.head_dim = shape.head_dim;
  config.max_requests = static_cast<int32_t>(lengths.size());
  config.max_seq_len = *std::max_element(lengths.begin(), lengths.end());
  config.capacity_slots = std::accumulate(lengths.begin(), lengths.end(), int64_t{0});
  auto cache = KvCache::Create(config, MemoryKind::kDevice);
  EXPECT_TRUE(cache.ok()) << cache.status();
  if (!cache.ok()) return nullptr;
  // Slots 1..capacity_slots, a chunk of tokens at a time.
  constexpr int kChunk = 4096;
  const size_t token_values = static_cast<size_t>(shape.kv_heads) * shape.head_dim;
  std::uniform_real_distribution<float> uniform(-2.0f, 2.0f);
  std::vector<float> kv(2 * kChunk * token_values);
  std::vector<int32_t> ids(kChunk);
  DeviceBuffer device_kv, device_ids;
  EXPECT_TRUE(device_kv.Allocate(kv.size() * sizeof(float), "test K/V").ok());
  EXPECT_TRUE(device_ids.Allocate(ids.size() * sizeof(int32_t), "test slots").ok());
  for (int64_t first = 1; first <= config.capacity_slots; first += kChunk) {
    const int n = static_cast<int>(std::min<int64_t>(kChunk, config.capacity_slots + 1 - first));
    for (float& x : kv) x = uniform(rng);
    std::iota(ids.begin(), ids.end(), static_cast<int32_t>(first));
    EXPECT_EQ(
        cudaMemcpy(device_kv.get(), kv.data(), kv.size() * sizeof(float), cudaMemcpyHostToDevice),
        cudaSuccess);
    EXPECT_EQ(cudaMemcpy(device_ids.get(), ids.data(), n * sizeof(int32_t), cudaMemcpyHostToDevice),
              cudaSuccess);
    const float* k = device_kv.as<float>();
    const KvRows rows{k, k + kChunk * token_values, DType::kFloat32, 0};
    EXPECT_TRUE(StoreKvCuda((*cache)->view(), 0, device_ids.as<int32_t>(), n, rows, nullptr).ok());
  }
  const std::vector<int32_t> pool =
      BenchPageTableSlots(config.capacity_slots, /*random_pages=*/true, /*window=*/0, rng);
  RequestTable& table = (*cache)->requests();
  size_t next = 0;
  for (int len : lengths) {
    const int32_t request = *table.AllocateRequest();
    EXPECT_TRUE(table.Append(request, absl::MakeConstSpan(pool.data() + next, len)).ok());
    next += len;
  }
  EXPECT_TRUE(table.SyncToDevice(nullptr).ok());
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return *std::move(cache);
}

// Random fp16 q rows, one per request of the cache (a request's q is the same in every batch).
std::vector<std::vector<uint16_t>> RandomQueries(const Shape& shape, size_t requests,
                                                 std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<std::vector<uint16_t>> q(requests, std::vector<uint16_t>(shape.row_size()));
  for (auto& row : q) {
    for (uint16_t& x : row) x = FloatToHalfBits(normal(rng));
  }
  return q;
}

// A backend over `cache` with device buffers for q and out of max_batch rows, a batch at a time.
class Runner {
 public:
  Runner(KvCache& cache, const Shape& shape, int max_batch, int32_t splits)
      : shape_(shape), max_batch_(max_batch) {
    BackendOptions options;
    options.io_dtype = DType::kFloat16;
    options.batch_invariant_splits = splits;
    AttentionShape attention{shape.kv_heads * shape.group,
                             shape.kv_heads,
                             shape.head_dim,
                             max_batch,
                             cache.config().max_seq_len,
                             0};
    auto backend = CreateCudaDecodeBackend(BindingFor(cache), attention, options);
    EXPECT_TRUE(backend.ok()) << backend.status();
    if (backend.ok()) backend_ = *std::move(backend);
    const size_t bytes = static_cast<size_t>(max_batch) * shape.row_size() * 2;
    EXPECT_TRUE(q_.Allocate(bytes, "q").ok());
    EXPECT_TRUE(out_.Allocate(bytes, "out").ok());
  }

  bool ok() const { return backend_ != nullptr; }
  DecodeAttentionBackend& backend() { return *backend_; }
  void* q() const { return q_.get(); }
  void* out() const { return out_.get(); }

  // Plans `rows`, uploads their queries (padded rows: zeros) and poisons out with NaN.
  void Prepare(const std::vector<DecodeRow>& rows,
               const std::vector<std::vector<uint16_t>>& queries) {
    ASSERT_LE(static_cast<int>(rows.size()), max_batch_);
    std::vector<uint16_t> q(rows.size() * shape_.row_size(), 0);
    for (size_t b = 0; b < rows.size(); ++b) {
      if (rows[b].seq_len == 0) continue;
      std::copy(queries[rows[b].request].begin(), queries[rows[b].request].end(),
                q.begin() + b * shape_.row_size());
    }
    ASSERT_CUDA(cudaMemcpy(q_.get(), q.data(), q.size() * 2, cudaMemcpyHostToDevice));
    ASSERT_CUDA(cudaMemset(out_.get(), 0xff, q.size() * 2));
    const absl::Status planned = backend_->Plan(rows, nullptr);
    ASSERT_TRUE(planned.ok()) << planned;
  }

  // The output bits of `rows` after Prepare and a Run (or a graph replay).
  std::vector<uint16_t> Output(size_t rows) const {
    std::vector<uint16_t> out(rows * shape_.row_size());
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(out.data(), out_.get(), out.size() * 2, cudaMemcpyDeviceToHost),
              cudaSuccess);
    return out;
  }

  // Prepare, Run and Output.
  std::vector<uint16_t> RunBatch(const std::vector<DecodeRow>& rows,
                                 const std::vector<std::vector<uint16_t>>& queries) {
    Prepare(rows, queries);
    const absl::Status run = backend_->Run(0, q_.get(), out_.get(), nullptr);
    EXPECT_TRUE(run.ok()) << run;
    return Output(rows.size());
  }

 private:
  Shape shape_;
  int max_batch_;
  std::unique_ptr<DecodeAttentionBackend> backend_;
  DeviceBuffer q_, out_;
};

// Row b of a batch's output.
std::vector<uint16_t> RowOf(const std::vector<uint16_t>& out, size_t b, const Shape& shape) {
  return std::vector<uint16_t>(out.begin() + b * shape.row_size(),
                               out.begin() + (b + 1) * shape.row_size());
}

// A batch of `size` rows holding `probe` at a random place, the other rows other requests
// (or padded rows) drawn at random.
std::vector<DecodeRow> BatchAround(const DecodeRow& probe, int size,
                                   const std::vector<int>& lengths, std::mt19937& rng) {
  std::vector<DecodeRow> rows(size);
  for (DecodeRow& row : rows) {
    const int32_t request = static_cast<int32_t>(rng() % lengths.size());
    row = rng() % 8 == 0 ? DecodeRow{0, 0} : DecodeRow{request, lengths[request]};
  }
  rows[rng() % size] = probe;
  return rows;
}

// Probe requests (from one token to 20,000, beyond what a 16-chunk row covers in 64-token
// chunks) and others around them, some long enough that PlanDecode would cut the probes by
// the step's total in the larger batches.
struct Requests {
  std::vector<int> lengths;
  int probes = 0;  // requests [0, probes) are the probes
};

Requests MakeRequests(std::mt19937& rng) {
  Requests r;
  r.lengths = {1, 300, 2049, 5000, 20000};
  r.probes = static_cast<int>(r.lengths.size());
  for (int i = 0; i < 43; ++i) r.lengths.push_back(1 + static_cast<int>(rng() % 3000));
  return r;
}

// The first row of `rows` that is `probe` (BatchAround may draw its request again elsewhere,
// with the same q and length, so any of them must give the probe's bits).
size_t PlaceOf(const DecodeRow& probe, const std::vector<DecodeRow>& rows) {
  for (size_t b = 0; b < rows.size(); ++b) {
    if (rows[b].request == probe.request && rows[b].seq_len == probe.seq_len) return b;
  }
  ADD_FAILURE() << "the probe is not in the batch";
  return 0;
}

// `what` says what the two outputs are.
void ExpectSameBits(const std::vector<uint16_t>& got, const std::vector<uint16_t>& want,
                    const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  size_t differing = 0, first = got.size();
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i] && differing++ == 0) first = i;
  }
  EXPECT_EQ(differing, 0u) << what << ": " << differing << " of " << got.size()
                           << " outputs differ, the first at " << first;
}

// Outputs of a row alone are finite and not all zero (the mode computes attention at all).
void ExpectComputed(const std::vector<uint16_t>& row, const std::string& what) {
  bool nonzero = false;
  for (uint16_t bits : row) {
    const float x = HalfBitsToFloat(bits);
    ASSERT_TRUE(std::isfinite(x)) << what;
    nonzero |= x != 0.0f;
  }
  EXPECT_TRUE(nonzero) << what;
}

// The requests, their cache and queries, and a backend for max_batch rows over them.
struct Workload {
  Workload(int max_batch, int32_t splits, std::mt19937& rng)
      : requests(MakeRequests(rng)),
        cache(RandomCache(shape, requests.lengths, rng)),
        queries(RandomQueries(shape, requests.lengths.size(), rng)) {
    if (cache != nullptr) runner = std::make_unique<Runner>(*cache, shape, max_batch, splits);
  }
  bool ok() const { return runner != nullptr && runner->ok(); }

  const Shape shape;
  const Requests requests;
  std::unique_ptr<KvCache> cache;
  const std::vector<std::vector<uint16_t>> queries;  // one q row a request
  std::unique_ptr<Runner> runner;
};

class CudaBatchInvarianceTest : public ::testing::TestWithParam<int32_t> {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  }
  std::mt19937 rng_{77};
};

// Each probe alone (a batch of 1: the narrow merge grid in the default mode), then in batches
// of 2, 4, 16 and 48 around it (other merge shapes, and plans cut by the step's total in the
// default mode) and of kWideSplitMinBatch and 64 (split blocks of 8 KV heads, as 48 where that
// is at least kWideSplitMinBatch): the same bits every time.
TEST_P(CudaBatchInvarianceTest, ARowHasTheSameBitsAloneAndInAnyBatch) {
  const int32_t splits = GetParam();
  constexpr int kLargestBatch = 64;
  static_assert(kLargestBatch >= kWideSplitMinBatch, "the largest batch must run in wide blocks");
  Workload work(kLargestBatch, splits, rng_);
  ASSERT_TRUE(work.ok());
  const absl::StatusOr<DecodeKernels> kernels =
      DecodeKernels::Select(work.shape.head_dim, work.shape.group, work.shape.kv_heads,
                            QuantMode::kSymmetric, ParamDtype::kFloat16, /*group_size=*/8);
  ASSERT_TRUE(kernels.ok()) << kernels.status();
  ASSERT_TRUE(kernels->has_wide_blocks()) << "the largest batch no longer changes block shape";
  Runner& runner = *work.runner;
  for (int32_t p = 0; p < work.requests.probes; ++p) {
    const DecodeRow probe{p, work.requests.lengths[p]};
    const std::vector<uint16_t> alone = runner.RunBatch({probe}, work.queries);
    ExpectComputed(alone, absl::StrCat("probe of ", probe.seq_len, " tokens alone"));
    for (const int size : {2, 4, 16, kWideSplitMinBatch, 48, kLargestBatch}) {
      for (int trial = 0; trial < 2; ++trial) {
        const std::vector<DecodeRow> rows = BatchAround(probe, size, work.requests.lengths, rng_);
        const std::vector<uint16_t> out = runner.RunBatch(rows, work.queries);
        const size_t place = PlaceOf(probe, rows);
        ExpectSameBits(
            RowOf(out, place, work.shape), alone,
            absl::StrCat("splits ", splits, ", probe of ", probe.seq_len, " tokens at row ", place,
                         " of ", size, " against its run alone"));
      }
    }
  }
}

// One graph captured for a bucket of 16 rows replays steps that hold the probes at other
// places beside other rows: each probe's bits are those of its run alone.
TEST_P(CudaBatchInvarianceTest, AReplayedGraphGivesEachRowItsBitsAlone) {
  const int32_t splits = GetParam();
  Workload work(16, splits, rng_);
  ASSERT_TRUE(work.ok());
  Runner& runner = *work.runner;
  std::vector<std::vector<uint16_t>> alone;
  for (int32_t p = 0; p < work.requests.probes; ++p) {
    alone.push_back(runner.RunBatch({{p, work.requests.lengths[p]}}, work.queries));
  }
  // Steps of 16 rows: every probe, at shuffled places, among other requests and padding.
  auto step = [&]() {
    std::vector<DecodeRow> rows =
        BatchAround({0, work.requests.lengths[0]}, 16, work.requests.lengths, rng_);
    for (DecodeRow& row : rows) {
      if (row.request < work.requests.probes) row = {0, 0};  // probes appear once each, below
    }
    std::vector<int> places(16);
    std::iota(places.begin(), places.end(), 0);
    std::shuffle(places.begin(), places.end(), rng_);
    for (int32_t p = 0; p < work.requests.probes; ++p)
      rows[places[p]] = {p, work.requests.lengths[p]};
    return rows;
  };
  cudaStream_t stream;
  ASSERT_CUDA(cudaStreamCreate(&stream));
  runner.Prepare(step(), work.queries);
  cudaGraph_t graph;
  ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  ASSERT_TRUE(runner.backend().Run(0, runner.q(), runner.out(), stream).ok());
  ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec;
  ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 4; ++replay) {
    const std::vector<DecodeRow> rows = step();
    runner.Prepare(rows, work.queries);
    ASSERT_CUDA(cudaGraphLaunch(exec, stream));
    ASSERT_CUDA(cudaStreamSynchronize(stream));
    const std::vector<uint16_t> out = runner.Output(rows.size());
    for (size_t b = 0; b < rows.size(); ++b) {
      if (rows[b].seq_len == 0 || rows[b].request >= work.requests.probes) continue;
      ExpectSameBits(RowOf(out, b, work.shape), alone[rows[b].request],
                     absl::StrCat("splits ", splits, ", replay ", replay, ", probe of ",
                                  rows[b].seq_len, " tokens at row ", b, " against its run alone"));
    }
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// Either mode is deterministic run to run: the same batch gives the same bits every time (no
// atomics, no order that depends on timing), whether or not it gives them alone.
TEST(CudaBatchDeterminismTest, TheSameBatchGivesTheSameBitsEveryTime) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(78);
  for (const int32_t splits : {0, 16}) {
    Workload work(48, splits, rng);
    ASSERT_TRUE(work.ok());
    const std::vector<DecodeRow> rows =
        BatchAround({4, work.requests.lengths[4]}, 48, work.requests.lengths, rng);
    const std::vector<uint16_t> first = work.runner->RunBatch(rows, work.queries);
    for (int run = 1; run < 4; ++run) {
      ExpectSameBits(
          work.runner->RunBatch(rows, work.queries), first,
          absl::StrCat("splits ", splits, ", run ", run, " of 48 rows against the first"));
    }
  }
}

// 16 splits: rows of up to 64 chunks merge in one load round whatever the merge's shape would
// be. 128: the 20,000-token probe takes 125 chunks, which the default mode's narrow merge grid
// (batches of at most 4) spreads over several blocks.
INSTANTIATE_TEST_SUITE_P(Splits, CudaBatchInvarianceTest, ::testing::Values(16, 128));

}  // namespace
}  // namespace int4kv
