#include "server/engine.h"

#include <algorithm>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/monotonic_time.h"
#include "common/status_macros.h"
#include "server/condition_wait.h"
#include "server/engine_device.h"
#include "server/model_source.h"

namespace int4kv {
namespace {

uint64_t MixSeed(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// `config` as created: kv_capacity_slots is the cache's capacity. A request also needs prompt
// + max_new_tokens slots of the cache, so a cache smaller than max_seq_len lowers the largest
// max_new_tokens accepted (and advertised, EngineInfo::max_new_tokens_limit).
RequestLimits LimitsFor(const EngineConfig& config, const ModelConfig& model) {
  RequestLimits limits;
  limits.vocab_size = model.vocab_size;
  limits.max_seq_len = config.max_seq_len;
  limits.kv_capacity_slots = config.kv_capacity_slots;
  limits.max_new_tokens =
      static_cast<int32_t>(std::min<int64_t>(config.max_new_tokens_limit, limits.longest() - 1));
  return limits;
}

// The EngineConfig field that sized the KV cache, with its value, for errors.
std::string KvSizingField(const EngineConfig& config) {
  if (config.kv_budget_bytes > 0) {
    return absl::StrCat("EngineConfig.kv_budget_bytes = ", config.kv_budget_bytes);
  }
  if (config.kv_gpu_memory_fraction > 0) {
    return absl::StrCat("EngineConfig.kv_gpu_memory_fraction = ", config.kv_gpu_memory_fraction);
  }
  return absl::StrCat("EngineConfig.kv_capacity_slots = ", config.kv_capacity_slots);
}

uint64_t RandomSeedBase() {
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineConfig& config,
                                                       std::shared_ptr<const LlamaWeights> weights,
                                                       std::string model_source,
                                                       const KvAttentionFactory& attention) {
  if (weights == nullptr) return absl::InvalidArgumentError("Engine: weights are null");
  RETURN_IF_ERROR(weights->Validate());
  ASSIGN_OR_RETURN(const EngineConfig resolved, config.Resolve(weights->config));
  const ModelConfig model = weights->config;
  absl::StatusOr<std::unique_ptr<Scheduler>> created_scheduler;
  try {
    created_scheduler = Scheduler::Create(resolved, std::move(weights), attention);
  } catch (const std::bad_alloc&) {
    // The host buffers grow with max_batch x vocab (logits) and max_step_tokens x the model's
    // widths (activations), which the limits allow past any host's memory.
    return absl::ResourceExhaustedError(
        absl::StrCat("the engine's host buffers do not fit in memory: logits for max_batch = ",
                     resolved.max_batch, " rows of vocab ", model.vocab_size,
                     ", activations for max_step_tokens = ", resolved.max_step_tokens,
                     " tokens; lower max_batch (or EngineConfig.max_step_tokens)"));
  }
  RETURN_IF_ERROR(created_scheduler.status());
  std::unique_ptr<Scheduler> scheduler = *std::move(created_scheduler);
  // The scheduler's copy has the capacity it created (kv_gpu_memory_fraction sizes it there).
  const EngineConfig created = scheduler->config();
  if (created.kv_capacity_slots < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("the KV cache holds ", created.kv_capacity_slots, " token slots (sized by ",
                     KvSizingField(resolved),
                     "): a request needs at least 2, one prompt token and one new token"));
  }
  std::unique_ptr<Engine> engine(
      new Engine(created, std::move(scheduler), std::move(model_source)));
  engine->thread_ = std::thread([e = engine.get()] { e->Loop(); });
  return engine;
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::CreateFromSource(const EngineConfig& config,
                                                                 absl::string_view source,
                                                                 uint64_t weight_seed) {
  ASSIGN_OR_RETURN(const ModelSource parsed, ParseModelSource(source, weight_seed));
  ASSIGN_OR_RETURN(LlamaWeights weights, LoadModelWeights(parsed, config.threads));
  return Create(config, std::make_shared<const LlamaWeights>(std::move(weights)),
                parsed.ToString());
}

Engine::Engine(const EngineConfig& config, std::unique_ptr<Scheduler> scheduler,
               std::string model_source)
    : config_(config),
      limits_(LimitsFor(config, scheduler->model().config())),
      seed_base_(RandomSeedBase()),
      scheduler_(std::move(scheduler)) {
  const KvCacheConfig& kv = scheduler_->cache().config();
  info_.device = config.device;
  info_.device_name = DeviceName(config.device);
  info_.model_source = std::move(model_source);
  info_.model = scheduler_->model().config();
  info_.attention = std::string(scheduler_->attention().name());
  info_.max_batch = config.max_batch;
  info_.max_queue = config.max_queue;
  // The limits a request can really reach: it also needs prompt + max_new_tokens slots of the
  // cache, so a cache smaller than max_seq_len lowers both.
  info_.max_seq_len = static_cast<int32_t>(limits_.longest());
  info_.max_new_tokens_limit = limits_.max_new_tokens;
  info_.max_step_tokens = config.max_step_tokens;
  info_.slots_total = kv.capacity_slots;
  info_.group_size = kv.group_size;
  info_.quant_mode = kv.quant_mode;
  info_.param_dtype = kv.param_dtype;
  info_.kv_bytes_per_token = kv.BytesPerToken();
  info_.kv_pool_bytes = kv.PoolBytes();
  info_.kv_gpu_sizing = scheduler_->kv_gpu_sizing();
  info_.graph_buckets = scheduler_->graph_buckets();
  info_.cuda_graphs = !info_.graph_buckets.empty();
  UpdateInfoLocked();  // no other thread exists yet
}

Engine::~Engine() { Shutdown(absl::ZeroDuration()); }

absl::StatusOr<std::shared_ptr<RequestStream>> Engine::Submit(GenerateRequest request) {
  RETURN_IF_ERROR(ValidateRequest(request, limits_));
  std::lock_guard<std::mutex> lock(mutex_);
  if (draining_) {
    return absl::UnavailableError("the engine is shutting down and accepts no new requests");
  }
  if (!info_.failure.empty()) return absl::UnavailableError(info_.failure);
  // The queued requests that the next step boundary admits (in order, while batch rows and
  // KV slots last, as Loop does; the counts published at the last boundary) are not waiting
  // and do not count against max_queue. So an idle engine accepts max_batch + max_queue
  // requests at once when the cache holds the first max_batch, however the submissions and
  // the steps interleave, and a full cache leaves at most max_queue requests waiting.
  int32_t rows = std::max(0, config_.max_batch - info_.running);
  int64_t slots = info_.slots_free;
  size_t admitted = 0;  // the head of the queue that the next step admits
  for (const PendingRequest& queued : queue_) {
    const int64_t needed = Scheduler::SlotsNeeded(queued.request);
    if (rows == 0 || needed > slots) break;  // in order: everything behind it waits too
    --rows;
    slots -= needed;
    ++admitted;
  }
  const bool admitted_too =
      admitted == queue_.size() && rows > 0 && Scheduler::SlotsNeeded(request) <= slots;
  const size_t waiting = queue_.size() - admitted + (admitted_too ? 0 : 1);
  if (waiting > static_cast<size_t>(config_.max_queue)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the request queue is full (max_queue = ", config_.max_queue,
                     " waiting requests); retry later"));
  }
  PendingRequest pending;
  pending.id = next_id_++;
  pending.seed =
      request.sampling.seed.has_value() ? *request.sampling.seed : MixSeed(seed_base_ + pending.id);
  pending.request = std::move(request);
  pending.stream = std::make_shared<RequestStream>(pending.id);
  pending.submit_time = MonotonicNow();
  std::shared_ptr<RequestStream> stream = pending.stream;
  live_.insert(pending.id);
  queue_.push_back(std::move(pending));
  info_.queued = static_cast<int32_t>(queue_.size());
  work_.notify_all();
  return stream;
}

absl::Status Engine::Cancel(uint64_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (live_.count(id) == 0) {
    return absl::NotFoundError(
        absl::StrCat("request ", id, " is not queued or running (unknown or already finished)"));
  }
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->id != id) continue;
    Usage usage;
    usage.prompt_tokens = static_cast<int32_t>(it->request.prompt.size());
    usage.total_time = MonotonicNow() - it->submit_time;
    it->stream->Finish(FinishReason::kCancelled,
                       absl::CancelledError(absl::StrCat("request ", id, " was cancelled")), usage);
    queue_.erase(it);
    live_.erase(id);
    info_.queued = static_cast<int32_t>(queue_.size());
    // A drain waits for an empty queue with nothing running; this may be what empties it.
    changed_.notify_all();
    return absl::OkStatus();
  }
  pending_cancels_.push_back(id);
  work_.notify_all();
  return absl::OkStatus();
}

void Engine::StopAccepting() {
  std::lock_guard<std::mutex> lock(mutex_);
  draining_ = true;
  info_.draining = true;
}

void Engine::Shutdown(absl::Duration drain_timeout) {
  std::lock_guard<std::mutex> shutdown_lock(shutdown_mutex_);
  StopAccepting();
  {
    std::unique_lock<std::mutex> lock(mutex_);
    if (shut_down_) return;
    const auto drained = [&] { return drain_ended_ || (queue_.empty() && info_.running == 0); };
    WaitFor(changed_, lock, drain_timeout, drained);  // an infinite timeout waits for good
    stopping_ = true;
    work_.notify_all();
  }
  thread_.join();
  std::lock_guard<std::mutex> lock(mutex_);
  shut_down_ = true;
}

void Engine::EndDrain() {
  std::lock_guard<std::mutex> lock(mutex_);
  drain_ended_ = true;
  changed_.notify_all();
}

void Engine::SetFailureHandler(std::function<void(const absl::Status&)> handler) {
  absl::Status failure;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!info_.failure.empty()) failure = absl::UnavailableError(info_.failure);
    failure_handler_ = handler;
  }
  if (!failure.ok() && handler) handler(failure);
}

EngineInfo Engine::GetInfo() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return info_;
}

bool Engine::HasWorkLocked() const {
  return stopping_ || !pending_cancels_.empty() || !scheduler_->idle() ||
         (!queue_.empty() && scheduler_->CanAdmit(queue_.front()));
}

void Engine::UpdateInfoLocked() {
  info_.slots_free = scheduler_->free_slots();
  info_.running = scheduler_->running();
  info_.queued = static_cast<int32_t>(queue_.size());
}

void Engine::Loop() {
  scheduler_->BindStepThread();
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_.wait(lock, [&] { return HasWorkLocked(); });
      // Cancellations first, so their slots are free for this step's admissions.
      for (uint64_t id : pending_cancels_) {
        if (scheduler_->Cancel(
                id, FinishReason::kCancelled,
                absl::CancelledError(absl::StrCat("request ", id, " was cancelled")))) {
          live_.erase(id);
        }
      }
      pending_cancels_.clear();
      if (stopping_) {
        const absl::Status status = absl::UnavailableError(
            "the engine shut down before the request finished (its drain timeout ran out, or a "
            "second signal ended the drain)");
        scheduler_->CancelAll(FinishReason::kCancelled, status);
        FinishQueuedLocked(status);
        live_.clear();
        UpdateInfoLocked();
        changed_.notify_all();
        return;
      }
      // Admission is FIFO: a request that does not fit yet blocks the ones behind it, so a
      // long request is never starved by a stream of short ones.
      while (!queue_.empty() && scheduler_->CanAdmit(queue_.front())) {
        scheduler_->Admit(std::move(queue_.front()));
        queue_.pop_front();
      }
      UpdateInfoLocked();
    }
    // A wake-up that only cancelled the last running request runs no forward pass.
    const bool forward_pass = scheduler_->running() > 0;
    const absl::Status step = scheduler_->Advance();
    if (forward_pass) failed_steps_in_a_row_ = step.ok() ? 0 : failed_steps_in_a_row_ + 1;
    const bool stop_serving = failed_steps_in_a_row_ == kFailedStepsToStop && forward_pass;
    absl::Status failure;  // what Submit refuses with once the engine has stopped
    if (stop_serving) {
      // Submit refuses from now on, and the handler (health NOT_SERVING) runs before any
      // request of this step ends: a client that sees its request fail finds the server
      // already not serving.
      failure = absl::UnavailableError(
          absl::StrCat("the engine stopped serving after ", kFailedStepsToStop,
                       " model steps in a row failed; the last: ", step.ToString()));
      std::function<void(const absl::Status&)> notify_failure;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        info_.failure = std::string(failure.message());
        notify_failure = failure_handler_;
      }
      if (notify_failure) notify_failure(failure);
    }
    {
      // Requests end under the lock, with the counters updated in the same hold: a client that
      // sees its request end and submits again at once finds its row and slots free.
      std::lock_guard<std::mutex> lock(mutex_);
      for (uint64_t id : scheduler_->RetireFinished()) live_.erase(id);
      if (forward_pass) ++info_.steps;
      if (stop_serving) {
        // The failed step's requests have ended INTERNAL; nothing else waits for a step that
        // would fail.
        scheduler_->CancelAll(FinishReason::kCancelled, failure);
        FinishQueuedLocked(failure);
        live_.clear();
      }
      UpdateInfoLocked();
    }
    changed_.notify_all();
  }
}

void Engine::FinishQueuedLocked(const absl::Status& status) {
  for (PendingRequest& pending : queue_) {
    Usage usage;
    usage.prompt_tokens = static_cast<int32_t>(pending.request.prompt.size());
    usage.total_time = MonotonicNow() - pending.submit_time;
    pending.stream->Finish(FinishReason::kCancelled, status, usage);
  }
  queue_.clear();
}

}  // namespace int4kv
