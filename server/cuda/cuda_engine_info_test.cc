// What the CUDA path reports about itself: a KV cache sized as a fraction of free GPU memory
// (server/cuda/kv_gpu_sizing.h) agrees with cudaMemGetInfo and is really allocated, the graph
// buckets are those captured, and the device name is the GPU's. Skips without a GPU.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "common/cuda_check.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/cuda/cuda_llama_model.h"
#include "server/cuda/decode_buckets.h"
#include "server/cuda/kv_gpu_sizing.h"
#include "server/cuda/testing/cuda_test_util.h"
#include "server/engine.h"
#include "server/engine_device.h"
#include "server/model_source.h"
#include "server/scheduler.h"

namespace int4kv {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kGiB = int64_t{1} << 30;

class CudaEngineInfoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  }
};

int64_t FreeBytesNow() {
  const absl::StatusOr<int64_t> free_bytes = FreeDeviceBytes();
  EXPECT_TRUE(free_bytes.ok()) << free_bytes.status();
  return free_bytes.value_or(0);
}

std::unique_ptr<Engine> CreateEngine(const EngineConfig& config) {
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(config, Stories260K(), kDefaultModelPath);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? std::move(*engine) : nullptr;
}

std::unique_ptr<Scheduler> CreateScheduler(const EngineConfig& config) {
  const absl::StatusOr<EngineConfig> resolved = config.Resolve(Stories260K()->config);
  EXPECT_TRUE(resolved.ok()) << resolved.status();
  if (!resolved.ok()) return nullptr;
  absl::StatusOr<std::unique_ptr<Scheduler>> scheduler =
      Scheduler::Create(*resolved, Stories260K());
  EXPECT_TRUE(scheduler.ok()) << scheduler.status();
  return scheduler.ok() ? std::move(*scheduler) : nullptr;
}

// Runs `requests` through the engine at once and returns their tokens, in order.
std::vector<std::vector<int32_t>> RunAll(Engine& engine,
                                         const std::vector<GenerateRequest>& requests) {
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const GenerateRequest& request : requests) {
    absl::StatusOr<std::shared_ptr<RequestStream>> stream = engine.Submit(request);
    EXPECT_TRUE(stream.ok()) << stream.status();
    if (stream.ok()) streams.push_back(*stream);
  }
  std::vector<std::vector<int32_t>> tokens;
  for (const auto& stream : streams) {
    const GenerationResult result = stream->ReadAll();
    EXPECT_EQ(result.finish_reason, FinishReason::kLength) << result.status;
    tokens.push_back(result.tokens);
  }
  return tokens;
}

// The last byte of each device pool can be read back: the whole pool is allocated.
void ExpectPoolEndsReadable(const KvCache& cache) {
  const KvCacheView& view = cache.view();
  uint8_t byte = 0;
  EXPECT_EQ(
      cudaMemcpy(&byte, view.data + view.layout.DataPoolBytes() - 1, 1, cudaMemcpyDeviceToHost),
      cudaSuccess);
  uint16_t param = 0;
  EXPECT_EQ(cudaMemcpy(&param, view.scales + view.layout.ParamPoolElements() - 1, 2,
                       cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_EQ(byte, 0);  // the pools are zero-filled at creation
  EXPECT_EQ(param, 0);
}

TEST_F(CudaEngineInfoTest, FractionSizesThePoolFromFreeMemoryAndThePoolIsAllocated) {
  // Greedy: batch composition may differ between the engine and the reference run.
  const std::vector<GenerateRequest> requests = MixedRequests(8, 21);
  const SchedulerRun reference = RunScheduler(CudaConfig(), requests);  // a default-sized cache
  const int64_t free_before = FreeBytesNow();
  EngineConfig config = CudaConfig();
  config.kv_gpu_memory_fraction = 0.25;
  std::unique_ptr<Engine> engine = CreateEngine(config);
  ASSERT_NE(engine, nullptr);
  const int64_t free_after = FreeBytesNow();
  const EngineInfo info = engine->GetInfo();
  const KvGpuSizing& sizing = info.kv_gpu_sizing;

  // Measured after the model: stories260K's weights and activations are well under a MiB,
  // cuBLAS's workspace 32 MiB.
  EXPECT_EQ(sizing.fraction, 0.25);
  EXPECT_LE(sizing.free_bytes, free_before);
  EXPECT_GE(sizing.free_bytes, free_before - kGiB);
  // req_to_token's mirror, the backend's workspace, the slot buffer: small (they may even fit
  // in device pages the model's allocations left partly used, and then count as nothing).
  EXPECT_GE(sizing.other_bytes, 0);
  EXPECT_LT(sizing.other_bytes, 256 * kMiB);
  EXPECT_EQ(sizing.reserve_bytes, kKvSizingReserveBytes);
  EXPECT_EQ(sizing.base_bytes, sizing.free_bytes - sizing.other_bytes - sizing.reserve_bytes);
  EXPECT_EQ(sizing.budget_bytes,
            static_cast<int64_t>(std::floor(0.25 * static_cast<double>(sizing.base_bytes))));

  // The cache has the computed capacity, and its pools fill the budget to within a token.
  EXPECT_GT(sizing.capacity_slots, int64_t{8} * 512);  // more than the default would give
  EXPECT_EQ(info.slots_total, sizing.capacity_slots);
  EXPECT_EQ(info.slots_free, info.slots_total);
  EXPECT_EQ(engine->config().kv_capacity_slots, sizing.capacity_slots);
  EXPECT_EQ(info.kv_pool_bytes, (info.slots_total + 1) * info.kv_bytes_per_token);
  EXPECT_LE(info.kv_pool_bytes, sizing.budget_bytes);
  EXPECT_GT(info.kv_pool_bytes, sizing.budget_bytes - info.kv_bytes_per_token);

  // The pools are resident, and what start-up allocated after the measurement (the cache's
  // other buffers, the attention, the graphs) fit in the other bytes plus the reserve.
  EXPECT_LE(free_after, free_before - info.kv_pool_bytes);
  EXPECT_GE(free_after,
            sizing.free_bytes - sizing.other_bytes - info.kv_pool_bytes - sizing.reserve_bytes);

  // It serves, with the tokens a default-sized cache gives.
  EXPECT_EQ(RunAll(*engine, requests), reference.tokens);
}

TEST_F(CudaEngineInfoTest, FractionOneTakesAllButTheReserveAndStillServes) {
  // Computed first: with the whole memory taken there is no room for a second model.
  const std::vector<GenerateRequest> requests = MixedRequests(12, 4);
  const SchedulerRun reference = RunScheduler(CudaConfig(), requests);
  EngineConfig config = CudaConfig();
  config.kv_gpu_memory_fraction = 1.0;
  std::unique_ptr<Scheduler> scheduler = CreateScheduler(config);
  ASSERT_NE(scheduler, nullptr);
  const int64_t free_after = FreeBytesNow();
  const KvGpuSizing& sizing = scheduler->kv_gpu_sizing();
  const KvCacheConfig& kv = scheduler->cache().config();
  EXPECT_EQ(kv.capacity_slots, sizing.capacity_slots);
  EXPECT_EQ(scheduler->config().kv_capacity_slots, sizing.capacity_slots);
  EXPECT_GT(kv.PoolBytes(), sizing.base_bytes - kv.BytesPerToken());
  // Nearly everything is taken: at most the reserve and the measured other bytes are left.
  EXPECT_LE(free_after, sizing.reserve_bytes + sizing.other_bytes + kv.BytesPerToken());
  ExpectPoolEndsReadable(scheduler->cache());
  EXPECT_THAT(scheduler->graph_buckets(), ElementsAre(1, 2, 4, 8));
  scheduler.reset();

  // The same through the engine: every request runs to its end in the full-memory cache.
  std::unique_ptr<Engine> engine = CreateEngine(config);
  ASSERT_NE(engine, nullptr);
  EXPECT_EQ(RunAll(*engine, requests), reference.tokens);
}

TEST_F(CudaEngineInfoTest, FractionedPoolIsAllocatedToItsLastByte) {
  EngineConfig config = CudaConfig();
  config.kv_gpu_memory_fraction = 0.1;
  config.quant_mode = QuantMode::kAsymmetric;  // a zero-point pool as well
  std::unique_ptr<Scheduler> scheduler = CreateScheduler(config);
  ASSERT_NE(scheduler, nullptr);
  ExpectPoolEndsReadable(scheduler->cache());
  const KvCacheView& view = scheduler->cache().view();
  uint16_t zero = 1;
  EXPECT_EQ(cudaMemcpy(&zero, view.zeros + view.layout.ParamPoolElements() - 1, 2,
                       cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_EQ(zero, 0);
}

TEST_F(CudaEngineInfoTest, ByteBudgetStillSizesTheDeviceCache) {
  EngineConfig config = CudaConfig();
  config.kv_budget_bytes = 1 << 20;
  std::unique_ptr<Engine> engine = CreateEngine(config);
  ASSERT_NE(engine, nullptr);
  const EngineInfo info = engine->GetInfo();
  EXPECT_EQ(info.slots_total, (1 << 20) / 240 - 1);  // 240 bytes a token, slot 0 reserved
  EXPECT_EQ(info.kv_pool_bytes, ((1 << 20) / 240) * 240);
  EXPECT_EQ(info.kv_gpu_sizing.capacity_slots, 0);  // not sized from free memory
}

TEST_F(CudaEngineInfoTest, ReportsTheGpuNameAndTheCapturedBuckets) {
  EngineConfig config = CudaConfig();
  config.max_batch = 6;
  std::unique_ptr<Engine> engine = CreateEngine(config);
  ASSERT_NE(engine, nullptr);
  EngineInfo info = engine->GetInfo();
  EXPECT_EQ(info.device, "cuda");
  EXPECT_EQ(info.device_name, CudaDeviceName());
  EXPECT_FALSE(info.device_name.empty());
  EXPECT_TRUE(info.cuda_graphs);
  EXPECT_THAT(info.graph_buckets, ElementsAre(1, 2, 4, 6));

  config.cuda_graphs = false;
  engine = CreateEngine(config);
  ASSERT_NE(engine, nullptr);
  info = engine->GetInfo();
  EXPECT_FALSE(info.cuda_graphs);
  EXPECT_TRUE(info.graph_buckets.empty());
  EXPECT_EQ(info.device_name, CudaDeviceName());
}

TEST_F(CudaEngineInfoTest, BucketsAreTheCapturedGraphsCappedAtMaxBatchAnd256) {
  const std::vector<std::pair<int32_t, std::vector<int32_t>>> cases = {
      {1, {1}}, {8, {1, 2, 4, 8}}, {300, {1, 2, 4, 8, 16, 32, 64, 128, 256}}};
  for (const auto& [max_batch, expected] : cases) {
    EngineConfig config = CudaConfig();
    config.max_batch = max_batch;
    std::unique_ptr<Scheduler> scheduler = CreateScheduler(config);
    ASSERT_NE(scheduler, nullptr);
    const auto* model = dynamic_cast<const CudaLlamaModel*>(&scheduler->model());
    ASSERT_NE(model, nullptr);
    EXPECT_TRUE(model->graphs_captured());
    EXPECT_EQ(scheduler->graph_buckets(), expected) << max_batch;
    EXPECT_EQ(scheduler->graph_buckets(), model->buckets()) << max_batch;
    EXPECT_EQ(scheduler->graph_buckets(), DecodeBuckets(max_batch)) << max_batch;
  }
}

// Every decode batch size up to max_batch replays one of the reported graphs.
TEST_F(CudaEngineInfoTest, EveryDecodeBatchReplaysAReportedBucketsGraph) {
  EngineConfig config = CudaConfig();
  config.max_batch = 6;
  std::unique_ptr<Scheduler> scheduler = CreateScheduler(config);
  ASSERT_NE(scheduler, nullptr);
  const auto* model = dynamic_cast<const CudaLlamaModel*>(&scheduler->model());
  ASSERT_NE(model, nullptr);
  ASSERT_THAT(scheduler->graph_buckets(), ElementsAreArray({1, 2, 4, 6}));
  uint64_t id = 1;
  for (int32_t n = 1; n <= config.max_batch; ++n) {
    // n one-token prompts: every step has n tokens and every token samples.
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (int32_t i = 0; i < n; ++i) {
      PendingRequest pending;
      pending.id = id++;
      pending.request.prompt = {1};
      pending.request.max_new_tokens = 3;
      pending.request.ignore_eos = true;
      pending.stream = std::make_shared<RequestStream>(pending.id);
      pending.submit_time = absl::Now();
      ASSERT_TRUE(scheduler->CanAdmit(pending));
      streams.push_back(pending.stream);
      scheduler->Admit(std::move(pending));
    }
    const int64_t replays_before = model->graph_replays();
    int64_t steps = 0;
    while (!scheduler->idle()) {
      scheduler->Step();
      ++steps;
    }
    EXPECT_EQ(steps, 3) << "batch " << n;
    EXPECT_EQ(model->graph_replays() - replays_before, steps) << "batch " << n;
    for (const auto& stream : streams) EXPECT_EQ(stream->ReadAll().tokens.size(), 3u);
  }
}

}  // namespace
}  // namespace int4kv
