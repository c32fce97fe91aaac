// Decode benchmark of the CUDA engine path on a random-weight model: for each batch size, decode
// throughput through the full step (plan, metadata copies, graph replay, greedy tokens back to
// the host), the replayed step's device time, and the sum of the same step's kernel times run
// eagerly with events around every launch. step/sum near 1 means the graph leaves no gaps
// between kernels; the goal is <= 1.05.
//
//   bazel run -c opt //server:engine_bench
//   bazel run -c opt //server:engine_bench -- --model=llama8b:4 --batches=1,8,64 --context=2048
//
// Each request holds --context tokens of (zero) KV context before the timed steps, which then
// append one token each. Copy bandwidth (device to device, bytes read + written) is the
// ceiling the effective bandwidth column is compared with: the weight bytes a step reads
// (every tensor but a token embedding that is not the LM head) + KV bytes read per replayed
// step, over its time.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/cuda_check.h"
#include "common/device_memory.h"
#include "common/parse_flags.h"
#include "common/status_macros.h"
#include "kv_cache/kv_cache.h"
#include "server/cuda/cuda_kv_attention.h"
#include "server/cuda/cuda_llama_model.h"
#include "server/cuda/kernel_timer.h"
#include "server/engine_config.h"
#include "server/model_source.h"
#include "server/step_batch.h"

ABSL_FLAG(std::string, model, "llama8b:4", "model source: a preset with a layer count, or a path");
ABSL_FLAG(std::string, batches, "1,2,4,8,16,32,64,128,256", "decode batch sizes");
ABSL_FLAG(int, context, 1024, "KV tokens each request holds before the timed steps");
ABSL_FLAG(int, steps, 32, "timed decode steps per batch (throughput)");
ABSL_FLAG(int, replays, 50, "graph replays timed per batch");
ABSL_FLAG(int, profiles, 5, "eagerly profiled steps per batch (the median kernel sum is shown)");
ABSL_FLAG(std::string, dtype, "float16", "weights and activations: float16 or bfloat16");
ABSL_FLAG(int, threads, 0, "host threads for generating weights; 0: one per core");

namespace int4kv {
namespace {

constexpr int kWarmupSteps = 3;

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

absl::StatusOr<std::vector<int32_t>> ParseBatches(const std::string& text) {
  std::vector<int32_t> batches;
  for (absl::string_view piece : absl::StrSplit(text, ',')) {
    int32_t b = 0;
    if (!absl::SimpleAtoi(piece, &b) || b < 1 || b > kMaxEngineBatch) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--batches entry '", piece, "' is invalid: must be in [1, ", kMaxEngineBatch, "]"));
    }
    batches.push_back(b);
  }
  return batches;
}

// Device-to-device copy bandwidth in GB/s (bytes read + written), the step's ceiling.
absl::StatusOr<double> CopyBandwidth(CudaStream stream) {
  size_t free_bytes = 0, total_bytes = 0;
  CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
  const size_t bytes = std::min<size_t>(size_t{1} << 30, free_bytes / 4);
  DeviceBuffer a, b;
  RETURN_IF_ERROR(a.Allocate(bytes, "the bandwidth probe"));
  RETURN_IF_ERROR(b.Allocate(bytes, "the bandwidth probe"));
  OwnedEvent start, stop;
  RETURN_IF_ERROR(start.Create(true));
  RETURN_IF_ERROR(stop.Create(true));
  constexpr int kCopies = 10;
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, stream));
  CUDA_RETURN_IF_ERROR(cudaEventRecord(start.get(), stream));
  for (int i = 0; i < kCopies; ++i) {
    CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, stream));
  }
  CUDA_RETURN_IF_ERROR(cudaEventRecord(stop.get(), stream));
  CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop.get()));
  float ms = 0;
  CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start.get(), stop.get()));
  return 2.0 * bytes * kCopies / (ms * 1e-3) / 1e9;
}

struct BatchResult {
  int32_t batch = 0;
  double tokens_per_s = 0;
  double host_step_ms = 0;  // wall time of one full step
  double replay_ms = 0;     // device time of one graph replay
  double kernel_sum_ms = 0;
  double kv_bytes = 0;      // KV bytes the replayed step reads
  std::vector<OpTime> ops;  // of the median profiled step
};

// The decoding state of the benchmark's requests.
struct Requests {
  std::vector<int32_t> rows;                // req_to_token rows
  std::vector<std::vector<int32_t>> slots;  // per request: every slot it will use
  std::vector<int32_t> next_tokens;
};

class Bench {
 public:
  Bench(KvCache* cache, CudaLlamaModel* model, CudaKvAttention* attention, KernelTimer* timer)
      : cache_(cache), model_(model), attention_(attention), timer_(timer) {}

  absl::StatusOr<BatchResult> Run(int32_t batch, int32_t context, int32_t steps, int32_t replays,
                                  int32_t profiles) {
    Requests requests;
    const int32_t total = context + kWarmupSteps + steps;
    for (int32_t i = 0; i < batch; ++i) {
      ASSIGN_OR_RETURN(const int32_t row, cache_->requests().AllocateRequest());
      requests.rows.push_back(row);
      requests.slots.emplace_back();
      RETURN_IF_ERROR(cache_->slots().Allocate(total, &requests.slots.back()));
      RETURN_IF_ERROR(cache_->requests().Append(
          row, absl::MakeConstSpan(requests.slots.back()).subspan(0, context)));
      requests.next_tokens.push_back(1 + i % 100);
    }
    BatchResult result;
    result.batch = batch;
    absl::Status status = Measure(requests, context, steps, replays, profiles, &result);
    for (int32_t i = 0; i < batch; ++i) {
      RETURN_IF_ERROR(cache_->slots().Free(requests.slots[i]));
      RETURN_IF_ERROR(cache_->requests().FreeRequest(requests.rows[i]));
    }
    RETURN_IF_ERROR(status);
    return result;
  }

 private:
  // One decode step at `position` (every request's next token), planned in the attention.
  absl::Status PlanStep(Requests& requests, int32_t position) {
    batch_.Clear();
    for (size_t i = 0; i < requests.rows.size(); ++i) {
      const int32_t slot = requests.slots[i][position];
      RETURN_IF_ERROR(cache_->requests().Append(requests.rows[i], absl::MakeConstSpan(&slot, 1)));
      batch_.AddToken(requests.next_tokens[i], position, slot, requests.rows[i]);
      batch_.logit_tokens.push_back(static_cast<int32_t>(i));
    }
    return attention_->Plan(batch_);
  }

  absl::Status Measure(Requests& requests, int32_t context, int32_t steps, int32_t replays,
                       int32_t profiles, BatchResult* result) {
    const int32_t batch = static_cast<int32_t>(requests.rows.size());
    int32_t position = context;
    Clock::time_point start;
    for (int32_t s = 0; s < kWarmupSteps + steps; ++s, ++position) {
      if (s == kWarmupSteps) start = Clock::now();
      RETURN_IF_ERROR(PlanStep(requests, position));
      RETURN_IF_ERROR(model_->ForwardGreedy(batch_, *attention_, requests.next_tokens.data()));
    }
    const double seconds = Seconds(start);
    result->tokens_per_s = batch * steps / seconds;
    result->host_step_ms = seconds * 1e3 / steps;
    result->kv_bytes = static_cast<double>(batch) * position * cache_->config().BytesPerToken();
    if (model_->graphs_captured() && batch <= model_->buckets().back()) {
      ASSIGN_OR_RETURN(result->replay_ms, model_->TimeGraphReplays(replays));
    }
    // The last step again, eagerly, with every launch timed.
    std::vector<std::pair<double, std::vector<OpTime>>> runs;
    const int64_t hold_ns = 20'000'000 + 1'000'000 * int64_t{model_->config().num_layers};
    for (int32_t p = 0; p < profiles; ++p) {
      RETURN_IF_ERROR(attention_->Plan(batch_));
      timer_->Reset();
      RETURN_IF_ERROR(timer_->Hold(model_->stream(), hold_ns));
      RETURN_IF_ERROR(
          model_->ProfileStep(batch_, *attention_, *timer_, requests.next_tokens.data()));
      ASSIGN_OR_RETURN(std::vector<OpTime> ops, timer_->Collect());
      double sum = 0;
      for (const OpTime& op : ops) sum += op.ms;
      runs.emplace_back(sum, std::move(ops));
    }
    std::sort(runs.begin(), runs.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    result->kernel_sum_ms = runs[runs.size() / 2].first;
    result->ops = std::move(runs[runs.size() / 2].second);
    return absl::OkStatus();
  }

  KvCache* cache_;
  CudaLlamaModel* model_;
  CudaKvAttention* attention_;
  KernelTimer* timer_;
  StepBatch batch_;
};

void PrintBreakdown(const BatchResult& r) {
  std::map<std::string, double> by_op;
  std::vector<std::string> order;
  for (const OpTime& op : r.ops) {
    if (by_op.emplace(op.name, 0.0).second) order.push_back(op.name);
    by_op[op.name] += op.ms;
  }
  std::printf("\nkernel time by op, batch %d (eager step, all layers):\n", r.batch);
  for (const std::string& name : order) {
    std::printf("  %-16s %9.3f ms  %5.1f%%\n", name.c_str(), by_op[name],
                100.0 * by_op[name] / r.kernel_sum_ms);
  }
}

absl::Status Main() {
  if (CudaDeviceCount() == 0) {
    return absl::FailedPreconditionError("no CUDA device found; engine_bench needs a GPU");
  }
  int device = 0;
  CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  cudaDeviceProp prop;
  CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, device));
  int runtime = 0, driver = 0;
  CUDA_RETURN_IF_ERROR(cudaRuntimeGetVersion(&runtime));
  CUDA_RETURN_IF_ERROR(cudaDriverGetVersion(&driver));
  std::printf("device: %s, %d SMs, %.1f GiB, CUDA runtime %d, driver %d\n", prop.name,
              prop.multiProcessorCount, prop.totalGlobalMem / double(1 << 30), runtime, driver);

  ASSIGN_OR_RETURN(const std::vector<int32_t> batches, ParseBatches(absl::GetFlag(FLAGS_batches)));
  const int32_t max_batch = *std::max_element(batches.begin(), batches.end());
  const int32_t context = absl::GetFlag(FLAGS_context);
  const int32_t steps = absl::GetFlag(FLAGS_steps);
  if (context < 1 || steps < 1 || absl::GetFlag(FLAGS_replays) < 1 ||
      absl::GetFlag(FLAGS_profiles) < 1) {
    return absl::InvalidArgumentError("--context, --steps, --replays and --profiles must be >= 1");
  }
  DType dtype;
  if (absl::GetFlag(FLAGS_dtype) == "float16") {
    dtype = DType::kFloat16;
  } else if (absl::GetFlag(FLAGS_dtype) == "bfloat16") {
    dtype = DType::kBFloat16;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--dtype = '", absl::GetFlag(FLAGS_dtype),
                                                   "' is invalid: must be float16 or bfloat16"));
  }

  const Clock::time_point load_start = Clock::now();
  ASSIGN_OR_RETURN(const ModelSource source, ParseModelSource(absl::GetFlag(FLAGS_model)));
  auto weights = std::make_unique<LlamaWeights>();
  ASSIGN_OR_RETURN(*weights, LoadModelWeights(source, absl::GetFlag(FLAGS_threads)));
  const ModelConfig model_config = weights->config;
  std::printf("model: %s (%s), %s, loaded in %.1f s\n", source.ToString().c_str(),
              model_config.DebugString().c_str(), std::string(DTypeName(dtype)).c_str(),
              Seconds(load_start));

  EngineConfig engine;
  engine.device = "cuda";
  engine.max_batch = max_batch;
  engine.max_step_tokens = max_batch;
  engine.max_seq_len = context + kWarmupSteps + steps + 1;
  engine.kv_capacity_slots = int64_t{max_batch} * (engine.max_seq_len + 1);
  engine.cuda_dtype = dtype;
  ASSIGN_OR_RETURN(engine, engine.Resolve(model_config));
  const KvCacheConfig kv = engine.KvConfig(model_config);
  absl::StatusOr<std::unique_ptr<KvCache>> cache = KvCache::Create(kv, MemoryKind::kDevice);
  if (!cache.ok()) {
    return absl::Status(
        cache.status().code(),
        absl::StrCat("creating the KV cache (", kv.capacity_slots, " slots, ",
                     kv.PoolBytes() / double(1 << 30), " GiB): ", cache.status().message()));
  }
  CudaModelOptions options;
  options.max_step_tokens = max_batch;
  options.max_logit_rows = max_batch;
  options.dtype = dtype;
  absl::StatusOr<std::unique_ptr<CudaLlamaModel>> model = CudaLlamaModel::Create(*weights, options);
  if (!model.ok()) {
    return absl::Status(model.status().code(),
                        absl::StrCat("creating the CUDA model: ", model.status().message()));
  }
  weights.reset();  // the device has its own copy
  ASSIGN_OR_RETURN(std::unique_ptr<CudaKvAttention> attention,
                   CudaKvAttention::Create(cache->get(), model_config.q_heads, max_batch, dtype,
                                           (*model)->stream()));
  const Clock::time_point capture_start = Clock::now();
  RETURN_IF_ERROR((*model)->CaptureDecodeGraphs(*attention));
  std::printf(
      "graphs: %zu buckets (1..%d) captured in %.2f s; weights %.2f GiB, KV pool %.2f GiB\n",
      (*model)->buckets().size(), (*model)->buckets().back(), Seconds(capture_start),
      (*model)->weight_bytes() / double(1 << 30), kv.PoolBytes() / double(1 << 30));
  ASSIGN_OR_RETURN(const double copy_gbps, CopyBandwidth((*model)->stream()));
  std::printf("device copy bandwidth: %.0f GB/s (read + write); context %d tokens\n\n", copy_gbps,
              context);
  ASSIGN_OR_RETURN(std::unique_ptr<KernelTimer> timer,
                   KernelTimer::Create(16 + 12 * model_config.num_layers));

  std::printf("%6s %12s %12s %11s %13s %10s %10s %8s\n", "batch", "tokens/s", "host step ms",
              "replay ms", "kernel sum ms", "step/sum", "eff. GB/s", "of copy");
  Bench bench(cache->get(), model->get(), attention.get(), timer.get());
  std::vector<BatchResult> results;
  for (const int32_t batch : batches) {
    ASSIGN_OR_RETURN(BatchResult r, bench.Run(batch, context, steps, absl::GetFlag(FLAGS_replays),
                                              absl::GetFlag(FLAGS_profiles)));
    const double bytes = (*model)->weight_step_read_bytes() + r.kv_bytes;
    const double gbps = r.replay_ms > 0 ? bytes / (r.replay_ms * 1e-3) / 1e9 : 0;
    std::printf("%6d %12.0f %12.3f %11.3f %13.3f %10.3f %10.0f %7.0f%%\n", batch, r.tokens_per_s,
                r.host_step_ms, r.replay_ms, r.kernel_sum_ms,
                r.replay_ms > 0 ? r.replay_ms / r.kernel_sum_ms : 0.0, gbps,
                100.0 * gbps / copy_gbps);
    std::fflush(stdout);
    results.push_back(std::move(r));
  }
  PrintBreakdown(results.front());
  if (results.size() > 1) PrintBreakdown(results.back());
  return absl::OkStatus();
}

}  // namespace
}  // namespace int4kv

int main(int argc, char** argv) {
  int4kv::ParseFlagsOnly(
      argc, argv,
      "Decode throughput of the CUDA engine's step per batch size, on a GPU machine. "
      "Example: engine_bench --model=llama8b:4 --batches=1,8,64 --context=2048");
  const absl::Status status = int4kv::Main();
  if (!status.ok()) {
    std::fprintf(stderr, "engine_bench: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
