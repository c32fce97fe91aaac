// The generation engine: a bounded request queue, one scheduler thread that owns the KV cache
// and the running batch (continuous batching through Scheduler), and per-request output
// streams.
//
//   auto engine = Engine::Create(config, weights, "testdata/models/stories260K.bin");
//   ASSIGN_OR_RETURN(std::shared_ptr<RequestStream> stream, (*engine)->Submit(request));
//   StreamEvent event;
//   while (stream->Next(&event)) { ... tokens, then one kFinish with reason and usage ... }
//
// Thread ownership: Submit, Cancel, GetInfo and Shutdown are thread-safe and may be called from
// any thread (the gRPC service's threads). The scheduler thread, started by Create and joined
// by Shutdown, is the only thread that touches the Scheduler (KV cache, model, running batch).
// Callers never touch the cache; they talk to the engine through the queue and the streams.
#ifndef INT4KV_SERVER_ENGINE_H_
#define INT4KV_SERVER_ENGINE_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/cuda/kv_gpu_sizing.h"
#include "server/engine_config.h"
#include "server/llama_weights.h"
#include "server/model_config.h"
#include "server/request.h"
#include "server/request_stream.h"
#include "server/scheduler.h"

namespace int4kv {

// A snapshot for introspection (the gRPC GetServerInfo).
struct EngineInfo {
  // Fixed at creation.
  std::string device;        // "cpu" or "cuda" (resolved)
  std::string device_name;   // the CPU model or the GPU name (engine_device.h); "" if unknown
  std::string model_source;  // as given to Create ("tiny", a checkpoint path, ...)
  ModelConfig model;
  std::string attention;  // "int4" (or "float" in tests)
  int32_t max_batch = 0;
  int32_t max_queue = 0;
  // Request limits, lowered to the KV capacity where the cache holds fewer slots.
  int32_t max_seq_len = 0;           // prompt + max_new_tokens, at most
  int32_t max_new_tokens_limit = 0;  // the largest max_new_tokens accepted
  int32_t max_step_tokens = 0;
  int64_t slots_total = 0;  // KV capacity in token slots
  int32_t group_size = 0;
  QuantMode quant_mode = QuantMode::kSymmetric;
  ParamDtype param_dtype = ParamDtype::kFloat16;
  int64_t kv_bytes_per_token = 0;  // all layers, K and V codes plus their parameters
  int64_t kv_pool_bytes = 0;
  // cuda with kv_gpu_memory_fraction: how the capacity was found (server/cuda/kv_gpu_sizing.h);
  // capacity_slots 0 otherwise.
  KvGpuSizing kv_gpu_sizing;
  // Decode steps replay CUDA graphs (cuda with cuda_graphs on), one per batch bucket: 1, 2, 4,
  // ..., 256, capped at max_batch. Empty on cpu and with graphs off.
  bool cuda_graphs = false;
  std::vector<int32_t> graph_buckets;
  // Current (as of the last step boundary).
  int64_t slots_free = 0;
  int32_t running = 0;
  int32_t queued = 0;
  int64_t steps = 0;  // engine steps run so far
  bool draining = false;
  // Empty while the engine serves; once it has stopped after kFailedStepsToStop model steps
  // in a row failed, why (the message Submit then refuses with).
  std::string failure;
};

// Model steps that must fail in a row before the engine stops serving (Engine::Submit). One
// failed step ends its requests with INTERNAL and the engine goes on; a failure that repeats
// (a sticky CUDA error, say) would otherwise fail every request sent to it.
constexpr int32_t kFailedStepsToStop = 3;

class Engine {
 public:
  // Resolves and validates `config` for the model, builds the scheduler (KV cache, model,
  // attention) and starts the scheduler thread. model_source is reported by GetInfo.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(
      const EngineConfig& config, std::shared_ptr<const LlamaWeights> weights,
      std::string model_source, const KvAttentionFactory& attention = nullptr);

  // Parses the source ("tiny", "llama8b:2", a checkpoint path; see model_source.h), loads the
  // weights and creates the engine.
  static absl::StatusOr<std::unique_ptr<Engine>> CreateFromSource(const EngineConfig& config,
                                                                  absl::string_view source,
                                                                  uint64_t weight_seed = 1);

  // Shutdown(absl::ZeroDuration()) if not shut down yet.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates and queues a request; the stream carries its tokens and then its finish.
  //   InvalidArgument: a bad field (named, with its range) or a request that can never fit.
  //   ResourceExhausted: max_queue requests already wait beyond those the next step admits
  //   (in order, while batch rows and KV slots last).
  //   Unavailable: the engine is shutting down, or has stopped after kFailedStepsToStop
  //   failed model steps in a row (the message says so and gives the last step's error).
  // A rejected request changes nothing in the engine.
  absl::StatusOr<std::shared_ptr<RequestStream>> Submit(GenerateRequest request);

  // Cancels a queued or running request: it finishes with kCancelled (status Cancelled) and
  // frees its slots within one engine step. NotFound if the id is not queued or running.
  absl::Status Cancel(uint64_t id);

  // Stops accepting requests (Submit -> Unavailable), lets queued and running requests finish
  // for up to `drain_timeout` (absl::InfiniteDuration(): until they are done), then cancels the
  // rest (kCancelled, status Unavailable) and joins the scheduler thread. Idempotent; later
  // calls return at once.
  void Shutdown(absl::Duration drain_timeout);
  // The first step of Shutdown alone: Submit refuses (Unavailable) from now on, and queued
  // and running requests go on. For a server that stops advertising itself before it drains,
  // so that no request gets in between. Idempotent.
  void StopAccepting();
  // Ends a Shutdown's drain now, as if its drain_timeout had run out: the requests still
  // queued or running are cancelled (status Unavailable). Called before Shutdown, it makes
  // that Shutdown drain nothing. For a second signal during a long drain.
  void EndDrain();

  // `handler` is called once with the Unavailable status Submit refuses with, when the
  // engine stops after kFailedStepsToStop model steps in a row failed: on the scheduler
  // thread, with no engine lock held, once Submit refuses and before the last failed step's
  // requests end (INTERNAL) and the others, queued or running, end (kCancelled, with that
  // status). If the engine has already stopped, it is called at once on this thread. It
  // replaces any earlier handler, must not call Shutdown, and must stay callable until
  // Shutdown returns.
  void SetFailureHandler(std::function<void(const absl::Status&)> handler);

  EngineInfo GetInfo() const;
  // Resolved, with kv_capacity_slots as created (also when kv_gpu_memory_fraction sized it).
  const EngineConfig& config() const { return config_; }
  const ModelConfig& model_config() const { return info_.model; }

 private:
  Engine(const EngineConfig& config, std::unique_ptr<Scheduler> scheduler,
         std::string model_source);

  void Loop();                 // the scheduler thread
  bool HasWorkLocked() const;  // the scheduler thread's wait condition
  void UpdateInfoLocked();     // copies the scheduler's counters into info_
  // Ends every queued request (kCancelled) with `status` and empties the queue.
  void FinishQueuedLocked(const absl::Status& status);

  const EngineConfig config_;
  const RequestLimits limits_;
  const uint64_t seed_base_;  // for requests without a sampling seed

  // Owned by the scheduler thread once it runs. Some reads of it (CanAdmit, running()) happen
  // while that thread holds mutex_, never from another thread.
  std::unique_ptr<Scheduler> scheduler_;

  mutable std::mutex mutex_;
  std::condition_variable work_;       // wakes the scheduler thread
  std::condition_variable changed_;    // after every step and queued cancel (Shutdown waits on it)
  std::deque<PendingRequest> queue_;   // guarded by mutex_
  std::unordered_set<uint64_t> live_;  // guarded by mutex_: queued or running ids
  std::vector<uint64_t> pending_cancels_;  // guarded by mutex_: running ids to cancel
  uint64_t next_id_ = 1;                   // guarded by mutex_
  bool draining_ = false;                  // guarded by mutex_
  bool drain_ended_ = false;               // guarded by mutex_; set by EndDrain
  bool stopping_ = false;                  // guarded by mutex_
  bool shut_down_ = false;                 // guarded by mutex_
  std::function<void(const absl::Status&)> failure_handler_;  // guarded by mutex_
  int32_t failed_steps_in_a_row_ = 0;                         // the scheduler thread's
  // Guarded by mutex_ (fixed fields set once). info_.failure, set once (kFailedStepsToStop),
  // is also what Submit refuses with.
  EngineInfo info_;

  std::mutex shutdown_mutex_;  // serializes Shutdown callers
  std::thread thread_;
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_ENGINE_H_
