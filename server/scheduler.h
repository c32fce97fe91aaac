// The engine's single-threaded core: owns the KV cache, the model, the KV attention and the
// running batch, and advances every running request by one token per Step (continuous
// batching). It has no lock and no thread of its own; Engine (engine.h) drives it from its
// scheduler thread, and tests drive it directly, step by step.
//
// Slot accounting: at admission a request reserves prompt + max_new_tokens KV slots and one
// req_to_token row, so a running request can never run out of slots mid-generation; a finished
// or cancelled request returns all of them in the same step. A token's slot is appended to its
// req_to_token row in the step that writes the token's K/V, so a row's length is always the
// number of the request's tokens in the cache.
//
// Thread ownership: not thread-safe; one thread (the engine's scheduler thread) at a time.
// Inside a step, the rows' samplers run in parallel on the scheduler's own pool (each request
// has its own sampler and random stream, so the tokens are those of one row after another).
#ifndef INT4KV_SERVER_SCHEDULER_H_
#define INT4KV_SERVER_SCHEDULER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/thread_pool.h"
#include "kv_cache/kv_cache.h"
#include "server/cuda/kv_gpu_sizing.h"
#include "server/engine_config.h"
#include "server/kv_attention.h"
#include "server/llama_weights.h"
#include "server/model.h"
#include "server/request.h"
#include "server/request_stream.h"
#include "server/sampler.h"
#include "server/step_batch.h"

namespace int4kv {

class CudaLlamaModel;

// Builds the KvAttention over `cache` for a model; the default is Int4KvAttention. Tests pass
// a float implementation to bypass quantization.
using KvAttentionFactory = std::function<absl::StatusOr<std::unique_ptr<KvAttention>>(
    KvCache* cache, const ModelConfig& model, const EngineConfig& config)>;

// A request accepted by the engine (validated), waiting for admission.
struct PendingRequest {
  uint64_t id = 0;
  GenerateRequest request;
  uint64_t seed = 0;  // the sampler's seed (request.sampling.seed, or one the engine picked)
  std::shared_ptr<RequestStream> stream;
  absl::Time submit_time;  // MonotonicNow() at Submit
};

class Scheduler {
 public:
  // config must be resolved (EngineConfig::Resolve) for weights->config. device "cpu": creates
  // the host KV cache, the CPU model and the attention (`attention` null: INT4 through the cpu
  // backend). device "cuda": the CUDA model (which converts the weights and need not keep
  // them), then the device KV cache (with kv_gpu_memory_fraction, sized from the GPU memory
  // left free by the model: server/cuda/kv_gpu_sizing.h), the CUDA INT4 attention (`attention`
  // must be null), and, when config.cuda_graphs, the decode graphs; FailedPrecondition without
  // a CUDA device.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(
      const EngineConfig& config, std::shared_ptr<const LlamaWeights> weights,
      const KvAttentionFactory& attention = nullptr);

  // KV slots a request reserves at admission.
  static int64_t SlotsNeeded(const GenerateRequest& request);

  // True when a row of the running batch and SlotsNeeded free slots are available.
  bool CanAdmit(const PendingRequest& pending) const;
  // Moves a request into the running batch, reserving its slots and req_to_token row.
  // Requires CanAdmit(pending).
  void Admit(PendingRequest pending);

  // Ends a running request now: its stream gets the finish event (`reason`, `status`) and its
  // slots and row are freed. False if `id` is not running.
  bool Cancel(uint64_t id, FinishReason reason, const absl::Status& status);
  // Cancel for every running request.
  void CancelAll(FinishReason reason, const absl::Status& status);

  // One engine step: Advance, then RetireFinished.
  std::vector<uint64_t> Step();
  // The step's work: every request past its prompt decodes one token; requests still in
  // prefill get the rest of the max_step_tokens budget in admission order (a request whose
  // prompt completes samples its first token). Streams the new tokens and marks the requests
  // that hit a stop token, EOS or max_new_tokens, or whose step failed (a model error, kError),
  // to be retired. Must be followed by RetireFinished before the next Advance. Returns the
  // model step's error when it failed (its requests are then marked kError), else OK (also
  // when nothing ran).
  absl::Status Advance();
  // Ends the requests Advance marked: their streams get the finish event and their slots and
  // rows are freed. Returns their ids. Kept apart from Advance so that the engine can retire
  // them under its lock and publish its counters before any client sees a request end.
  std::vector<uint64_t> RetireFinished();

  int32_t running() const { return static_cast<int32_t>(running_.size()); }
  bool idle() const { return running_.empty(); }
  int64_t free_slots() const { return cache_->slots().free_count(); }
  const KvCache& cache() const { return *cache_; }
  const Model& model() const { return *model_; }
  const KvAttention& attention() const { return *attention_; }
  // The config given to Create, with kv_capacity_slots as created.
  const EngineConfig& config() const { return config_; }
  // The decode batch sizes with a captured CUDA graph (1, 2, 4, ..., capped at max_batch);
  // empty on the cpu path and with cuda_graphs off.
  std::vector<int32_t> graph_buckets() const;
  // How kv_gpu_memory_fraction sized the cache; capacity_slots 0 when it did not.
  const KvGpuSizing& kv_gpu_sizing() const { return kv_gpu_sizing_; }
  // Makes the calling thread's current CUDA device the one the cuda path was created on (a
  // new host thread starts on device 0); nothing on the cpu path. Call first on the thread
  // that runs the steps. If the device cannot be selected, every step fails as a failed model
  // step does (its requests end INTERNAL, naming the device), and the engine stops serving
  // after kFailedStepsToStop of them.
  void BindStepThread();

 private:
  struct Running {
    PendingRequest pending;
    Sampler sampler;
    int32_t table_row = -1;
    std::vector<int32_t> slots;  // reserved: slots[p] holds the K/V of position p
    int32_t computed = 0;        // tokens whose K/V are in the cache (the row's length)
    int32_t generated = 0;       // tokens sampled and streamed
    int32_t last_token = -1;     // the next decode input
    absl::Time first_token_time = absl::InfinitePast();  // MonotonicNow() at the first token
  };

  explicit Scheduler(const EngineConfig& config);

  // Adds the request's next tokens (at most `budget`) to batch_; returns how many.
  int32_t AddTokens(Running& r, int32_t budget);
  // Streams the request's new token and checks the stop conditions; true when it is done.
  bool TakeToken(Running& r, int32_t token, FinishReason* reason);
  // Creates the CUDA model, the device cache_, the attention and the graphs (device "cuda").
  absl::Status CreateCudaPath(const LlamaWeights& weights);
  void Finish(size_t index, FinishReason reason, const absl::Status& status);
  Usage UsageOf(const Running& r, absl::Time now) const;

  EngineConfig config_;
  KvGpuSizing kv_gpu_sizing_;
  std::unique_ptr<KvCache> cache_;  // owned; the model's attention points into it
  std::unique_ptr<Model> model_;
  std::unique_ptr<KvAttention> attention_;  // destroyed before model_ (it uses model_'s stream)
  CudaLlamaModel* cuda_model_ = nullptr;    // model_, when the device is cuda
  int cuda_device_ = -1;                    // the current device at CreateCudaPath
  absl::Status bind_failure_;               // BindStepThread's, on the step thread
  std::vector<std::unique_ptr<Running>> running_;  // admission order
  StepBatch batch_;
  std::vector<Running*> logit_owner_;   // [batch_.logit_tokens.size()]
  std::vector<float> logits_;           // [max_batch][vocab]
  std::vector<int32_t> greedy_tokens_;  // [max_batch]: device argmax when every sampler is greedy
  std::vector<int32_t> sampled_tokens_;  // [max_batch]: the host samplers' tokens of a step
  ThreadPool sampling_pool_;             // EngineConfig::threads workers, for the samplers
  // Requests Advance found done, for RetireFinished.
  struct Retirement {
    uint64_t id;
    FinishReason reason;
    absl::Status status;
  };
  std::vector<Retirement> to_retire_;
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_SCHEDULER_H_
