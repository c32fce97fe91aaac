// Decode-attention benchmark: time per layer-run of the CUDA backend against the device's
// measured copy bandwidth (the ceiling), over batch x context x page-table x group size.
//
//   bazel run -c opt //backend:decode_bench                    # GPU table
//   bazel run -c opt //backend:decode_bench -- --cpu           # CPU backend figure
//
// Shape: 32 query heads, 8 KV heads, head_dim 128, fp16 queries. Each case is the median of
// --repeats timings, each timing a batch of CUDA-graph replays divided by the layer-runs in
// it. Small pools are spread over several layers so that consecutive runs do not find their
// data in L2; one graph runs the layers in turn, whole rounds of them and at least
// --runs_per_graph runs in all (as a model's step graph runs one per layer), so that the gap
// between two replays is shared by as many runs as in a model's step. Effective bandwidth counts
// the minimum bytes: codes + scales + page-table entries + q + out, each read or written once. Each
// case also times a device-to-device copy of that many bytes (read + write) replayed the same way,
// a kernel that only reads the layer's codes and scales, contiguously, once, and one that only
// reads the step's codes and scales through its page table, once. After the timings the
// timed path's output is checked (--check_rows): written and finite everywhere, and the
// checked rows within kCheckTolerance of float64 attention over their dequantized K/V.
// --other_rows_context=N measures skewed batches: row 0 has the listed context, the others N.
// Runs follow one another as programmatic dependents; --separate_runs puts an empty kernel
// before each, --store_before_runs the K/V store of the step's newest tokens (as a model's
// step does), and each subtracts that kernel's own time.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "backend/bench_page_tables.h"
#include "backend/cpu_decode_backend.h"
#include "backend/cuda_decode_backend.h"
#include "backend/float64_attention.h"
#include "backend/read_stream.h"
#include "common/device_memory.h"
#include "common/half.h"
#include "common/parse_flags.h"
#include "kv_cache/kv_cache.h"
#include "kv_cache/store_kv.h"
#include "kv_cache/store_kv_cuda.h"

ABSL_FLAG(std::string, batches, "1,16,64,128", "batch sizes");
ABSL_FLAG(std::string, contexts, "1024,4096,16384,65536", "context lengths in tokens");
ABSL_FLAG(std::string, group_sizes, "8,32", "KV quantization group sizes");
ABSL_FLAG(std::string, page_tables, "random,contiguous",
          "page-table kinds: random (slots permuted over the pool), contiguous (ascending), "
          "sorted (random's slots, each row's in ascending order within runs of --sorted_run), "
          "served (as the server's slot allocator reserves them after serving requests of "
          "--served_request_tokens on average, four pools' worth of tokens)");
ABSL_FLAG(std::string, mode, "symmetric",
          "quantization mode of the GPU cases' cache: symmetric or asymmetric (with zero points, "
          "which the cache-read and gather-read reference kernels leave out)");
ABSL_FLAG(int64_t, random_window, 0,
          "random page tables permute the slots only within consecutive windows of this many "
          "slots (0: over the whole pool), to tell a placement's spread from its order");
ABSL_FLAG(int64_t, sorted_run, 0,
          "sorted page tables sort each row's slots within runs of this many of its tokens "
          "(0: the whole row), to tell the order in which a step reads its slots from their "
          "spread over the pool");
ABSL_FLAG(int64_t, served_request_tokens, 1024,
          "served page tables: the mean size (prompt + output tokens) of the requests the pool "
          "served before the step's rows, sizes uniform in [1, 2 x this - 1]; a row then "
          "holds runs of consecutive slots of about a quarter of it");
ABSL_FLAG(double, max_pool_gib, 40.0, "skip cases whose KV pool would exceed this");
ABSL_FLAG(int, repeats, 9, "timings per case (the median is reported)");
ABSL_FLAG(int, ceiling_copies, 1,
          "1 GiB copies back to back in each timing of the copy ceiling (15 timings, the median "
          "taken): 1 times single copies, about 0.5 ms each on an H200; 200 keep the card "
          "busy for about 100 ms, as long as one timing of the largest cases");
ABSL_FLAG(int, runs_per_graph, 32,
          "layer-runs a timed graph holds at least (whole rounds of the layers in turn, as a "
          "model's step graph runs one per layer)");
ABSL_FLAG(bool, separate_runs, false,
          "launch an empty kernel (not a programmatic dependent) before each layer-run and "
          "subtract its own time: no run's launch overlaps the run before, as when attention "
          "follows kernels that do not release it early");
ABSL_FLAG(bool, store_before_runs, false,
          "store each row's newest token (StoreKvCuda, one token a row) before each layer-run, "
          "as a model's step does, and subtract the stores' own time: attention behind the "
          "K/V store, which releases it early");
ABSL_FLAG(bool, with_lse, false,
          "each layer-run also writes its rows' log-sum-exps (RunWithLse), whose bytes then "
          "count");
ABSL_FLAG(int, other_rows_context, 0,
          "if > 0, a skewed batch: row 0 has --contexts tokens, every other row this many");
ABSL_FLAG(int, batch_invariant_splits, 0,
          "BackendOptions.batch_invariant_splits: 0 plans each step as a whole; N > 0 runs the "
          "batch-invariant mode, each row cut into at most N chunks by its own length");
ABSL_FLAG(double, logit_soft_cap, 0,
          "AttentionShape.logit_soft_cap: 0 (none), or each score c x tanh(score / c)");
ABSL_FLAG(int, max_seq_len, 0,
          "AttentionShape.max_seq_len of the GPU cases' backend when above the case's context "
          "(0: the context): the split grid grows with it, so a short step pays the empty "
          "blocks it would pay in a server sized for rows this long");
ABSL_FLAG(int, check_rows, 2,
          "rows of each GPU case whose output is checked against float64 attention over their "
          "dequantized K/V after the timings (the first, the last and evenly between; 0: none); "
          "every output is also checked to be written and finite. A case that fails ends the "
          "run with exit status 1 after the table");
ABSL_FLAG(bool, cpu, false, "measure the CPU backend instead (no GPU needed)");
ABSL_FLAG(int, cpu_threads, 0, "CPU backend threads (0: one per hardware thread)");

namespace int4kv {
namespace {

constexpr int kQHeads = 32, kKvHeads = 8, kHeadDim = 128;

// The benchmark's attention shape for `batch` rows of up to `max_seq_len` tokens, soft-capped
// as --logit_soft_cap says.
AttentionShape BenchShape(int batch, int max_seq_len) {
  return AttentionShape{kQHeads, kKvHeads, kHeadDim, batch, max_seq_len, 0,
                        static_cast<float>(absl::GetFlag(FLAGS_logit_soft_cap))};
}

#define CHECK_CUDA(call)                                                     \
  do {                                                                       \
    const cudaError_t e = (call);                                            \
    if (e != cudaSuccess) {                                                  \
      std::fprintf(stderr, "%s failed: %s\n", #call, cudaGetErrorString(e)); \
      std::exit(1);                                                          \
    }                                                                        \
  } while (0)

template <typename T>
T CheckOk(absl::StatusOr<T> value) {
  if (!value.ok()) {
    std::fprintf(stderr, "%s\n", value.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*value);
}

void CheckOk(const absl::Status& status) {
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    std::exit(1);
  }
}

// The numbers of a comma-separated flag; exits 2 naming the flag on one that does not parse or
// is below `min`.
std::vector<int> ParseInts(const char* flag, const std::string& list, int min) {
  std::vector<int> values;
  for (absl::string_view part : absl::StrSplit(list, ',', absl::SkipEmpty())) {
    int v = 0;
    if (!absl::SimpleAtoi(part, &v)) {
      std::fprintf(stderr, "bad number '%s'\n", std::string(part).c_str());
      std::exit(2);
    }
    if (v < min) {
      std::fprintf(stderr, "%s: %d is invalid: must be >= %d\n", flag, v, min);
      std::exit(2);
    }
    values.push_back(v);
  }
  return values;
}

// The middle value, or the mean of the two middle values of an even count.
double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t half = v.size() / 2;
  return v.size() % 2 == 1 ? v[half] : 0.5 * (v[half - 1] + v[half]);
}

// Device-to-device copy bandwidth, counting bytes read plus bytes written.
double CopyCeilingGBps() {
  const size_t bytes = size_t{1} << 30;
  void *a, *b;
  CHECK_CUDA(cudaMalloc(&a, bytes));
  CHECK_CUDA(cudaMalloc(&b, bytes));
  CHECK_CUDA(cudaMemset(a, 1, bytes));
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  for (int i = 0; i < 3; ++i) CHECK_CUDA(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
  const int copies = absl::GetFlag(FLAGS_ceiling_copies);
  std::vector<double> rates;
  for (int i = 0; i < 15; ++i) {
    CHECK_CUDA(cudaEventRecord(start));
    for (int c = 0; c < copies; ++c) {
      const bool forward = (i * copies + c) % 2 == 0;
      CHECK_CUDA(
          cudaMemcpyAsync(forward ? b : a, forward ? a : b, bytes, cudaMemcpyDeviceToDevice));
    }
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    rates.push_back(2.0 * copies * bytes / (ms * 1e-3) / 1e9);
  }
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  CHECK_CUDA(cudaFree(a));
  CHECK_CUDA(cudaFree(b));
  return Median(rates);
}

// Fills a device buffer from a repeating host pattern.
void FillDevice(void* device, size_t bytes, const std::vector<uint8_t>& pattern) {
  for (size_t offset = 0; offset < bytes; offset += pattern.size()) {
    CHECK_CUDA(cudaMemcpy(static_cast<uint8_t*>(device) + offset, pattern.data(),
                          std::min(pattern.size(), bytes - offset), cudaMemcpyHostToDevice));
  }
}

struct CaseResult {
  double seconds;             // per layer-run
  double bytes;               // minimum bytes per layer-run
  double copy_seconds = 0;    // a device-to-device copy of `bytes` (read + write); 0: not run
  double read_seconds = 0;    // a plain read of the layer's codes and scales
  double gather_seconds = 0;  // a plain read of the step's slots, through its page table
  // Largest relative row error of the checked rows against float64 (--check_rows), or NaN
  // when an output was left unwritten or is not finite; -1: not checked.
  double check_error = -1;
};

// A checked row's relative error may exceed the tests' bound (2e-3 beyond the fp16 rounding
// of the exact result, about 2e-4) by this much before the case is called wrong.
constexpr double kCheckTolerance = 2.5e-3;

// Runs `layer` once more into `out` poisoned with NaN, then checks that every output is finite
// (padded rows exactly zero) and compares up to `check_rows` rows (the first, the last and
// evenly between) with float64 attention over their dequantized K/V. Returns the largest row
// error, or NaN for an output not written or not finite.
//   q_host: [batch][kQHeads][kHeadDim] fp16 bits, as uploaded to q.
double CheckOutput(const KvCache& cache, DecodeAttentionBackend& backend,
                   const std::vector<DecodeRow>& rows, const std::vector<uint16_t>& q_host,
                   const void* q, void* out, int layer, int check_rows, cudaStream_t stream) {
  const size_t row_size = static_cast<size_t>(kQHeads) * kHeadDim;
  CHECK_CUDA(cudaMemsetAsync(out, 0xff, q_host.size() * 2, stream));  // fp16 NaN
  CheckOk(backend.Run(layer, q, out, stream));
  std::vector<uint16_t> out_bits(q_host.size());
  CHECK_CUDA(
      cudaMemcpyAsync(out_bits.data(), out, out_bits.size() * 2, cudaMemcpyDeviceToHost, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  std::vector<float> q_values(q_host.size()), out_values(out_bits.size());
  for (size_t i = 0; i < q_host.size(); ++i) q_values[i] = HalfBitsToFloat(q_host[i]);
  for (size_t i = 0; i < out_bits.size(); ++i) {
    out_values[i] = HalfBitsToFloat(out_bits[i]);
    const bool padded = rows[i / row_size].seq_len == 0;
    if (!std::isfinite(out_values[i]) || (padded && out_values[i] != 0.0f)) return NAN;
  }
  const int batch = static_cast<int>(rows.size());
  const int count = std::min(check_rows, batch);
  const int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  double worst = 0;
  for (int i = 0; i < count; ++i) {
    const int b =
        count == 1 ? 0 : static_cast<int>(static_cast<int64_t>(i) * (batch - 1) / (count - 1));
    if (rows[b].seq_len == 0) continue;
    const absl::Span<const int32_t> slots =
        cache.requests().Tokens(rows[b].request).subspan(0, rows[b].seq_len);
    const std::vector<float> kv = CheckOk(DequantizeCudaToHost(cache.view(), layer, slots, stream));
    worst =
        std::max(worst, RowErrorAgainstFloat64(
                            kv, {kQHeads, kKvHeads, kHeadDim, backend.shape().logit_soft_cap},
                            &q_values[b * row_size], &out_values[b * row_size], threads));
  }
  return worst;
}

// Captures `enqueue(layer)` for the layers in turn, every layer the same number of times and
// at least --runs_per_graph calls in all, into one CUDA graph, replays it and returns the
// median over `repeats` timings of the time per call (each timing a batch of replays long
// enough to amortize the replay launch). Calls go round the layers whole times (a partial
// last round would come back to the first layers sooner), and RunCudaCase makes the pool at
// least 512 MB (or 64 layers: over 75 MB at 1 x 1024), more than L2 holds, so no call finds
// its data there.
double SecondsPerRun(cudaStream_t stream, int num_layers, int repeats,
                     const std::function<void(int)>& enqueue) {
  const int min_runs = std::max(1, absl::GetFlag(FLAGS_runs_per_graph));
  const int runs = num_layers * ((min_runs + num_layers - 1) / num_layers);
  cudaGraph_t graph;
  CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int run = 0; run < runs; ++run) enqueue(run % num_layers);
  CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec;
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  auto time_launches = [&](int launches) {
    CHECK_CUDA(cudaEventRecord(start, stream));
    for (int i = 0; i < launches; ++i) CHECK_CUDA(cudaGraphLaunch(exec, stream));
    CHECK_CUDA(cudaEventRecord(stop, stream));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    return ms * 1e-3;
  };
  time_launches(3);  // warm-up
  const double one = time_launches(1);
  const int launches = static_cast<int>(std::clamp(5e-3 / one, 1.0, 200.0));
  std::vector<double> per_run;
  for (int r = 0; r < repeats; ++r) {
    per_run.push_back(time_launches(launches) / (launches * runs));
  }
  CHECK_CUDA(cudaGetLastError());
  CHECK_CUDA(cudaGraphExecDestroy(exec));
  CHECK_CUDA(cudaGraphDestroy(graph));
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  return Median(per_run);
}

// The cache shape of the cases of one group size, with one slot: for checking the group size
// and for the bytes a token takes.
KvCacheConfig CaseShape(int group_size, QuantMode mode) {
  KvCacheConfig shape;
  shape.kv_heads = kKvHeads;
  shape.head_dim = kHeadDim;
  shape.group_size = group_size;
  shape.quant_mode = mode;
  shape.capacity_slots = 1;
  return shape;
}

// The rows' lengths of a case: the first row `context` tokens, the others
// --other_rows_context where it is set.
std::vector<int> CaseLengths(int batch, int context) {
  const int other = absl::GetFlag(FLAGS_other_rows_context);
  std::vector<int> lengths(batch, other > 0 ? other : context);
  lengths[0] = context;
  return lengths;
}

// The cache of a case whose rows have `lengths` tokens (a slot each), sized for rows of up to
// --max_seq_len tokens where that is longer; one layer (RunCudaCase adds more).
KvCacheConfig CaseConfig(const std::vector<int>& lengths, int group_size, QuantMode mode) {
  KvCacheConfig config = CaseShape(group_size, mode);
  const int max_len = *std::max_element(lengths.begin(), lengths.end());
  config.capacity_slots = std::accumulate(lengths.begin(), lengths.end(), int64_t{0});
  config.max_requests = static_cast<int32_t>(lengths.size());
  config.max_seq_len = std::max(max_len, absl::GetFlag(FLAGS_max_seq_len));
  return config;
}

// False for a case whose pool of one layer passes --max_pool_gib: it is left out of the table.
bool FitsPoolLimit(const KvCacheConfig& config) {
  const double pool = static_cast<double>(config.capacity_slots) *
                      (config.DataBytesPerTokenPerLayer() + config.ParamBytesPerTokenPerLayer());
  return pool <= absl::GetFlag(FLAGS_max_pool_gib) * (1 << 30);
}

// lengths: tokens of each row of the batch; page_table: a kind ParsePageTables accepts.
CaseResult RunCudaCase(const std::vector<int>& lengths, int group_size, QuantMode mode,
                       const std::string& page_table, int repeats, std::mt19937& rng) {
  const int batch = static_cast<int>(lengths.size());
  KvCacheConfig config = CaseConfig(lengths, group_size, mode);
  const int64_t tokens = config.capacity_slots;  // a slot each
  const double layer_bytes =
      static_cast<double>(config.capacity_slots + 1) *
      (config.DataBytesPerTokenPerLayer() + config.ParamBytesPerTokenPerLayer());
  config.num_layers = static_cast<int>(std::clamp(std::ceil(512e6 / layer_bytes), 1.0, 64.0));
  auto cache = CheckOk(KvCache::Create(config, MemoryKind::kDevice));

  // Random codes; random positive fp16 scales of a realistic size.
  std::vector<uint8_t> codes(64 << 20);
  for (uint8_t& b : codes) b = static_cast<uint8_t>(rng());
  std::vector<uint8_t> scales(64 << 20);
  std::uniform_real_distribution<float> scale_dist(0.01f, 0.1f);
  for (size_t i = 0; i + 1 < scales.size(); i += 2) {
    const uint16_t h = FloatToHalfBits(scale_dist(rng));
    scales[i] = static_cast<uint8_t>(h & 0xff);
    scales[i + 1] = static_cast<uint8_t>(h >> 8);
  }
  const KvLayout& layout = cache->view().layout;
  FillDevice(cache->view().data, layout.DataPoolBytes(), codes);
  FillDevice(cache->view().scales, layout.ParamPoolElements() * 2, scales);
  if (cache->view().zeros != nullptr) {  // zero points of the same size
    FillDevice(cache->view().zeros, layout.ParamPoolElements() * 2, scales);
  }

  std::vector<int32_t> slots;
  if (page_table == "served") {
    const int64_t mean_request = absl::GetFlag(FLAGS_served_request_tokens);
    slots = CheckOk(ServedPageTableSlots(lengths, config.capacity_slots, mean_request,
                                         4 * config.capacity_slots / mean_request, rng));
  } else {
    slots = BenchPageTableSlots(config.capacity_slots, page_table != "contiguous",
                                absl::GetFlag(FLAGS_random_window), rng);
    if (page_table == "sorted") SortRowSlots(lengths, absl::GetFlag(FLAGS_sorted_run), slots);
  }
  std::vector<DecodeRow> rows;
  size_t first_slot = 0;
  for (int len : lengths) {
    const int32_t request = CheckOk(cache->requests().AllocateRequest());
    CheckOk(cache->requests().Append(request, absl::MakeConstSpan(slots.data() + first_slot, len)));
    rows.push_back({request, len});
    first_slot += len;
  }
  CheckOk(cache->requests().SyncToDevice(nullptr));

  const AttentionShape shape = BenchShape(batch, config.max_seq_len);
  BackendOptions options;
  options.io_dtype = DType::kFloat16;
  options.batch_invariant_splits = absl::GetFlag(FLAGS_batch_invariant_splits);
  auto backend = CheckOk(CreateCudaDecodeBackend(BindingFor(*cache), shape, options));
  const size_t qo = static_cast<size_t>(batch) * kQHeads * kHeadDim;
  std::vector<uint16_t> q_host(qo);
  std::normal_distribution<float> normal;
  for (uint16_t& x : q_host) x = FloatToHalfBits(normal(rng));
  void *q, *out;
  CHECK_CUDA(cudaMalloc(&q, qo * 2));
  CHECK_CUDA(cudaMalloc(&out, qo * 2));
  CHECK_CUDA(cudaMemcpy(q, q_host.data(), qo * 2, cudaMemcpyHostToDevice));

  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  CheckOk(backend->Plan(rows, stream));
  CaseResult result;
  // --with_lse: [batch][kQHeads] floats.
  DeviceBuffer lse;
  if (absl::GetFlag(FLAGS_with_lse)) {
    CheckOk(lse.Allocate(static_cast<size_t>(batch) * kQHeads * sizeof(float), "the lse"));
  }
  result.bytes = static_cast<double>(tokens) * (config.DataBytesPerTokenPerLayer() +
                                                config.ParamBytesPerTokenPerLayer() + 4) +
                 2.0 * qo * 2 + static_cast<double>(lse.bytes());
  // What goes before each layer-run, if anything; its own time is subtracted.
  std::function<void(int)> before_run;
  DeviceBuffer new_kv, new_slots;  // --store_before_runs only
  if (absl::GetFlag(FLAGS_separate_runs)) {
    before_run = [&](int) { CHECK_CUDA(LaunchEmptyKernel(stream)); };
  } else if (absl::GetFlag(FLAGS_store_before_runs)) {
    // The step's new K/V rows [2][batch][kv_heads][head_dim] (K, then V), stored into each
    // row's newest slot, as the engine stores them before attention.
    const size_t new_rows = static_cast<size_t>(batch) * kKvHeads * kHeadDim;
    std::vector<uint16_t> new_kv_host(2 * new_rows);
    for (uint16_t& x : new_kv_host) x = FloatToHalfBits(normal(rng));
    std::vector<int32_t> newest_slots;
    first_slot = 0;
    for (int len : lengths) {
      newest_slots.push_back(slots[first_slot + len - 1]);
      first_slot += len;
    }
    CheckOk(new_kv.Allocate(new_kv_host.size() * 2, "the new K/V rows"));
    CheckOk(new_slots.Allocate(newest_slots.size() * sizeof(int32_t), "the newest slots"));
    CHECK_CUDA(
        cudaMemcpy(new_kv.get(), new_kv_host.data(), new_kv.bytes(), cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(new_slots.get(), newest_slots.data(), new_slots.bytes(),
                          cudaMemcpyHostToDevice));
    const KvRows rows{new_kv.get(), new_kv.as<uint16_t>() + new_rows, DType::kFloat16, 0};
    before_run = [&, rows](int layer) {
      CheckOk(StoreKvCuda(cache->view(), layer, new_slots.as<int32_t>(), batch, rows, stream));
    };
  }
  result.seconds = SecondsPerRun(stream, config.num_layers, repeats, [&](int layer) {
    if (before_run) before_run(layer);
    CheckOk(backend->RunWithLse(layer, q, out, lse.as<float>(), stream));
  });
  if (before_run) result.seconds -= SecondsPerRun(stream, config.num_layers, repeats, before_run);

  // The same number of bytes moved by cudaMemcpyAsync, as the ceiling is (half read from this
  // layer's codes, half written to a buffer of its own per layer), replayed the same way: what
  // a plain copy of this size achieves, launch and ramp included.
  const size_t half = static_cast<size_t>(result.bytes / 2) / 16 * 16;
  const bool fits_in_layer =
      half <= static_cast<size_t>(layout.DataBytesPerSlot() * layout.num_slots);
  void* copies = nullptr;
  if (fits_in_layer && cudaMalloc(&copies, half * config.num_layers) == cudaSuccess) {
    const uint8_t* codes = cache->view().data;
    result.copy_seconds = SecondsPerRun(stream, config.num_layers, repeats, [&](int layer) {
      CHECK_CUDA(cudaMemcpyAsync(static_cast<uint8_t*>(copies) + half * layer,
                                 codes + layout.DataOffset(layer, 0, 0), half,
                                 cudaMemcpyDeviceToDevice, stream));
    });
    CHECK_CUDA(cudaFree(copies));
  } else {
    (void)cudaGetLastError();  // no room for the copy: report no figure
  }

  // A kernel that only reads this layer's codes and scales, in address order, replayed the
  // same way: the time any kernel needs to read the cache bytes of the step, without page
  // tables, gathers, math or a combine.
  uint32_t* sink;
  CHECK_CUDA(cudaMalloc(&sink, sizeof(uint32_t)));
  const KvCacheView& view = cache->view();
  result.read_seconds = SecondsPerRun(stream, config.num_layers, repeats, [&](int layer) {
    CHECK_CUDA(LaunchReadStream(view.data + layout.DataOffset(layer, 0, 0),
                                layout.DataBytesPerSlot() * layout.num_slots,
                                view.scales + layout.ParamOffset(layer, 0, 0),
                                layout.ParamsPerSlot() * layout.num_slots * 2, sink, stream));
  });

  // A kernel that only reads the slots the step reads, each once, in the order of its page
  // table (row by row, each row's tokens in order), replayed the same way: the time any kernel
  // needs to gather the step's cache bytes, without math or a combine.
  DeviceBuffer step_slots;
  CheckOk(step_slots.Allocate(tokens * sizeof(int32_t), "the step's slots"));
  CHECK_CUDA(
      cudaMemcpy(step_slots.get(), slots.data(), step_slots.bytes(), cudaMemcpyHostToDevice));
  result.gather_seconds = SecondsPerRun(stream, config.num_layers, repeats, [&](int layer) {
    CHECK_CUDA(LaunchGatherRead(
        step_slots.as<int32_t>(), tokens, view.data + layout.DataOffset(layer, 0, 0),
        layout.DataBytesPerSlot(), view.scales + layout.ParamOffset(layer, 0, 0),
        layout.ParamsPerSlot() * 2, /*checksum=*/nullptr, stream));
  });
  CHECK_CUDA(cudaFree(sink));
  if (const int check_rows = absl::GetFlag(FLAGS_check_rows); check_rows > 0) {
    result.check_error = CheckOutput(*cache, *backend, rows, q_host, q, out, config.num_layers - 1,
                                     check_rows, stream);
  }
  cudaStreamDestroy(stream);
  cudaFree(q);
  cudaFree(out);
  return result;
}

// --page_tables as a list of kinds; anything but "random", "sorted", "contiguous" or "served"
// exits with status 2.
std::vector<std::string> ParsePageTables(const std::string& list) {
  std::vector<std::string> kinds;
  for (absl::string_view kind : absl::StrSplit(list, ',', absl::SkipEmpty())) {
    if (kind != "random" && kind != "sorted" && kind != "contiguous" && kind != "served") {
      std::fprintf(stderr, "bad page-table kind '%s' (random, sorted, contiguous or served)\n",
                   std::string(kind).c_str());
      std::exit(2);
    }
    kinds.emplace_back(kind);
  }
  return kinds;
}

int RunGpu() {
  // The lists first, so that a typo is reported before any device work.
  const std::vector<int> group_sizes =
      ParseInts("--group_sizes", absl::GetFlag(FLAGS_group_sizes), 1);
  const std::vector<int> batches = ParseInts("--batches", absl::GetFlag(FLAGS_batches), 1);
  const std::vector<int> contexts = ParseInts("--contexts", absl::GetFlag(FLAGS_contexts), 1);
  const std::vector<std::string> page_tables = ParsePageTables(absl::GetFlag(FLAGS_page_tables));
  const absl::StatusOr<QuantMode> mode = ParseQuantMode(absl::GetFlag(FLAGS_mode));
  if (!mode.ok()) {
    std::fprintf(stderr, "%s\n", std::string(mode.status().message()).c_str());
    std::exit(2);
  }
  for (const int group_size : group_sizes) {
    if (const absl::Status status = CaseShape(group_size, *mode).Validate(); !status.ok()) {
      std::fprintf(stderr, "--group_sizes: %s\n", std::string(status.message()).c_str());
      std::exit(2);
    }
  }
  for (const int batch : batches) {
    if (batch > kMaxBatch) {
      std::fprintf(stderr, "--batches: %d is invalid: must be <= %d (AttentionShape.max_batch)\n",
                   batch, kMaxBatch);
      std::exit(2);
    }
  }
  // The cases the table holds, in its order (those past --max_pool_gib left out), each checked
  // against the cache's limits before any device work: one past them would end the run
  // partway through.
  struct Case {
    int group_size, batch, context;
  };
  std::vector<Case> cases;
  for (const int group_size : group_sizes) {
    for (const int batch : batches) {
      for (const int context : contexts) {
        const KvCacheConfig config = CaseConfig(CaseLengths(batch, context), group_size, *mode);
        if (!FitsPoolLimit(config)) continue;
        if (const absl::Status status = config.Validate(); !status.ok()) {
          std::fprintf(stderr, "--batches=%d --contexts=%d (with --max_seq_len): %s\n", batch,
                       context, std::string(status.message()).c_str());
          std::exit(2);
        }
        cases.push_back({group_size, batch, context});
      }
    }
  }
  cudaDeviceProp props;
  CHECK_CUDA(cudaGetDeviceProperties(&props, 0));
  const double ceiling = CopyCeilingGBps();
  std::printf("device: %s, %d SMs, %.0f MB L2\n", props.name, props.multiProcessorCount,
              props.l2CacheSize / 1e6);
  if (const int copies = absl::GetFlag(FLAGS_ceiling_copies); copies > 1) {
    std::printf("copy ceiling timed over %d copies back to back (--ceiling_copies)\n", copies);
  }
  std::printf("copy ceiling (cudaMemcpy D2D, 1 GiB, read + write): %.0f GB/s\n\n", ceiling);
  if (const int64_t window = absl::GetFlag(FLAGS_random_window); window > 0) {
    std::printf("random tables: slots permuted within windows of %lld consecutive slots\n\n",
                static_cast<long long>(window));
  }
  if (const int64_t run = absl::GetFlag(FLAGS_sorted_run); run > 0) {
    std::printf("sorted tables: each row's slots ascending within runs of %lld tokens\n\n",
                static_cast<long long>(run));
  }
  if (*mode == QuantMode::kAsymmetric) {
    std::printf("asymmetric cache (scales and zero points)\n\n");
  }
  if (const int splits = absl::GetFlag(FLAGS_batch_invariant_splits); splits > 0) {
    std::printf("batch-invariant mode: each row in at most %d chunks\n\n", splits);
  }
  if (const double cap = absl::GetFlag(FLAGS_logit_soft_cap); cap != 0) {
    std::printf("logits soft-capped at %g (AttentionShape.logit_soft_cap)\n\n", cap);
  }
  if (const int max_seq_len = absl::GetFlag(FLAGS_max_seq_len); max_seq_len > 0) {
    std::printf("backends sized for rows of up to %d tokens (AttentionShape.max_seq_len)\n\n",
                max_seq_len);
  }
  if (absl::GetFlag(FLAGS_separate_runs)) {
    std::printf("time: a layer-run behind an empty kernel, less that kernel's own time\n\n");
  }
  if (absl::GetFlag(FLAGS_store_before_runs)) {
    std::printf(
        "time: a layer-run behind the K/V store of its newest tokens, less the store's "
        "own time\n\n");
  }
  std::printf(
      "| group | batch | context | pages | time (us) | GB/s | %% of copy | same-bytes copy (us) "
      "| %% of same-bytes copy | cache read (us) | %% of cache read | gather read (us) "
      "| %% of gather read | checked rows' error |\n");
  std::printf("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  int failed_checks = 0;
  std::mt19937 rng(7);
  const int other = absl::GetFlag(FLAGS_other_rows_context);
  for (const Case& c : cases) {
    for (const std::string& kind : page_tables) {
      const CaseResult r = RunCudaCase(CaseLengths(c.batch, c.context), c.group_size, *mode, kind,
                                       absl::GetFlag(FLAGS_repeats), rng);
      const double gbps = r.bytes / r.seconds / 1e9;
      const std::string context_text =
          other > 0 && c.batch > 1 ? absl::StrCat(c.context, " + ", c.batch - 1, " x ", other)
                                   : absl::StrCat(c.context);
      const std::string copy_text = r.copy_seconds > 0
                                        ? absl::StrFormat("%.1f | %.1f", r.copy_seconds * 1e6,
                                                          100.0 * r.copy_seconds / r.seconds)
                                        : std::string("- | -");
      const bool check_failed =
          r.check_error != -1 && !(r.check_error <= kCheckTolerance);  // NaN fails
      failed_checks += check_failed ? 1 : 0;
      const std::string check_text =
          r.check_error == -1 ? std::string("-")
          : std::isnan(r.check_error)
              ? std::string("FAILED: an output unwritten or not finite")
              : absl::StrFormat("%.1e%s", r.check_error, check_failed ? " FAILED" : "");
      std::printf(
          "| %d | %d | %s | %s | %.1f | %.0f | %.1f | %s | %.1f | %.1f | %.1f | %.1f | %s |\n",
          c.group_size, c.batch, context_text.c_str(), kind.c_str(), r.seconds * 1e6, gbps,
          100.0 * gbps / ceiling, copy_text.c_str(), r.read_seconds * 1e6,
          100.0 * r.read_seconds / r.seconds, r.gather_seconds * 1e6,
          100.0 * r.gather_seconds / r.seconds, check_text.c_str());
      std::fflush(stdout);
    }
  }
  if (failed_checks > 0) {
    std::fprintf(stderr,
                 "%d case(s) failed the output check (a checked row's error over %.1e against "
                 "float64, or an output not written or not finite)\n",
                 failed_checks, kCheckTolerance);
    return 1;
  }
  return 0;
}

// CPU backend: (tokens x query heads) attended per second, float32 accumulation.
int RunCpu() {
  std::mt19937 rng(7);
  std::printf(
      "| batch | context | threads | time (ms) | tokens x heads / s "
      "|\n|---:|---:|---:|---:|---:|\n");
  for (int batch : {1, 4}) {
    const int context = 4096;
    KvCacheConfig config;
    config.kv_heads = kKvHeads;
    config.head_dim = kHeadDim;
    config.capacity_slots = static_cast<int64_t>(batch) * context;
    config.max_requests = batch;
    config.max_seq_len = context;
    auto cache = CheckOk(KvCache::Create(config, MemoryKind::kHost));
    std::vector<float> k(static_cast<size_t>(context) * kKvHeads * kHeadDim), v(k.size());
    std::normal_distribution<float> normal;
    for (float& x : k) x = normal(rng);
    for (float& x : v) x = normal(rng);
    std::vector<DecodeRow> rows;
    for (int b = 0; b < batch; ++b) {
      std::vector<int32_t> slots(context);
      std::iota(slots.begin(), slots.end(), 1 + b * context);
      CheckOk(StoreKvHost(cache->view(), 0, slots, KvRows{k.data(), v.data(), DType::kFloat32, 0}));
      const int32_t request = CheckOk(cache->requests().AllocateRequest());
      CheckOk(cache->requests().Append(request, slots));
      rows.push_back({request, context});
    }
    BackendOptions options;
    options.cpu_threads = absl::GetFlag(FLAGS_cpu_threads);
    const AttentionShape shape = BenchShape(batch, context);
    auto backend = CheckOk(CreateCpuDecodeBackend(BindingFor(*cache), shape, options));
    std::vector<float> q(static_cast<size_t>(batch) * kQHeads * kHeadDim, 0.3f), out(q.size());
    std::vector<float> lse(absl::GetFlag(FLAGS_with_lse) ? batch * kQHeads : 0);
    float* lse_or_null = lse.empty() ? nullptr : lse.data();
    CheckOk(backend->Plan(rows, nullptr));
    CheckOk(backend->RunWithLse(0, q.data(), out.data(), lse_or_null, nullptr));  // warm-up
    std::vector<double> times;
    for (int r = 0; r < 5; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      CheckOk(backend->RunWithLse(0, q.data(), out.data(), lse_or_null, nullptr));
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    const double t = Median(times);
    std::printf("| %d | %d | %d | %.2f | %.3g |\n", batch, context,
                options.cpu_threads == 0 ? static_cast<int>(std::thread::hardware_concurrency())
                                         : options.cpu_threads,
                t * 1e3, static_cast<double>(batch) * context * kQHeads / t);
  }
  return 0;
}

}  // namespace
}  // namespace int4kv

int main(int argc, char** argv) {
  int4kv::ParseFlagsOnly(
      argc, argv,
      "Decode-attention time per layer-run against the copy ceiling measured in the same "
      "run (CUDA; --cpu for the CPU backend). Example: decode_bench --batches=1,16 "
      "--contexts=4096,65536");
  const int repeats = absl::GetFlag(FLAGS_repeats);
  const int runs_per_graph = absl::GetFlag(FLAGS_runs_per_graph);
  if (absl::GetFlag(FLAGS_separate_runs) && absl::GetFlag(FLAGS_store_before_runs)) {
    std::fprintf(stderr, "--separate_runs and --store_before_runs: choose one\n");
    return 2;
  }
  if (repeats < 1 || runs_per_graph < 1) {
    std::fprintf(stderr, "--repeats = %d, --runs_per_graph = %d: both must be >= 1\n", repeats,
                 runs_per_graph);
    return 2;
  }
  if (repeats > 10000 || runs_per_graph > 10000) {
    std::fprintf(stderr, "--repeats = %d, --runs_per_graph = %d: both must be <= 10000\n", repeats,
                 runs_per_graph);
    return 2;
  }
  if (const int other = absl::GetFlag(FLAGS_other_rows_context); other < 0) {
    std::fprintf(stderr, "--other_rows_context = %d: must be >= 0 (0: every row the context)\n",
                 other);
    return 2;
  }
  if (const int check_rows = absl::GetFlag(FLAGS_check_rows); check_rows < 0) {
    std::fprintf(stderr, "--check_rows = %d: must be >= 0 (0: no row checked)\n", check_rows);
    return 2;
  }
  if (const double gib = absl::GetFlag(FLAGS_max_pool_gib); !(gib > 0)) {
    std::fprintf(stderr, "--max_pool_gib = %g: must be > 0\n", gib);
    return 2;
  }
  const int64_t random_window = absl::GetFlag(FLAGS_random_window);
  if (random_window < 0) {
    std::fprintf(stderr, "--random_window = %lld: must be >= 0 (0: the whole pool)\n",
                 static_cast<long long>(random_window));
    return 2;
  }
  if (const int64_t run = absl::GetFlag(FLAGS_sorted_run); run < 0) {
    std::fprintf(stderr, "--sorted_run = %lld: must be >= 0 (0: whole rows)\n",
                 static_cast<long long>(run));
    return 2;
  }
  if (const int copies = absl::GetFlag(FLAGS_ceiling_copies); copies < 1 || copies > 10000) {
    std::fprintf(stderr, "--ceiling_copies = %d: must be in [1, 10000]\n", copies);
    return 2;
  }
  if (const int64_t served = absl::GetFlag(FLAGS_served_request_tokens); served < 1) {
    std::fprintf(stderr, "--served_request_tokens = %lld: must be >= 1\n",
                 static_cast<long long>(served));
    return 2;
  }
  if (const int max_seq_len = absl::GetFlag(FLAGS_max_seq_len); max_seq_len < 0) {
    std::fprintf(stderr, "--max_seq_len = %d: must be >= 0 (0: each case's context)\n",
                 max_seq_len);
    return 2;
  }
  if (const double cap = absl::GetFlag(FLAGS_logit_soft_cap); !int4kv::IsValidLogitSoftCap(cap)) {
    std::fprintf(stderr, "--logit_soft_cap = %g: must be 0 (none) or in [%g, %g]\n", cap,
                 int4kv::kMinLogitSoftCap, int4kv::kMaxLogitSoftCap);
    return 2;
  }
  const int splits = absl::GetFlag(FLAGS_batch_invariant_splits);
  if (splits < 0 || splits > int4kv::kMaxBatchInvariantSplits) {
    std::fprintf(stderr, "--batch_invariant_splits = %d: must be 0 (off) or in [1, %d]\n", splits,
                 int4kv::kMaxBatchInvariantSplits);
    return 2;
  }
  return absl::GetFlag(FLAGS_cpu) ? int4kv::RunCpu() : int4kv::RunGpu();
}
