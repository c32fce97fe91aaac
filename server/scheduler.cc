#include "server/scheduler.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/cuda_check.h"
#include "common/monotonic_time.h"
#include "common/status_macros.h"
#include "server/cpu_llama_model.h"
#include "server/cuda/cuda_kv_attention.h"
#include "server/cuda/cuda_llama_model.h"
#include "server/int4_kv_attention.h"

namespace int4kv {
namespace {

// A failed call here is a broken invariant of the scheduler (a bug, not bad input).
void CheckOk(const absl::Status& status, const char* what) {
  if (status.ok()) return;
  std::fprintf(stderr, "int4kv scheduler invariant broken: %s: %s\n", what,
               status.ToString().c_str());
  std::abort();
}

// Sampler::Sample's greedy rule: these requests take the argmax and draw no random number, so
// the device's argmax can stand in for the sampler.
bool SamplesGreedily(const SamplingParams& params) {
  return params.temperature == 0.0f || params.top_k == 1;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(
    const EngineConfig& config, std::shared_ptr<const LlamaWeights> weights,
    const KvAttentionFactory& attention) {
  if (weights == nullptr) return absl::InvalidArgumentError("Scheduler: weights are null");
  const ModelConfig& model = weights->config;
  if (config.device == "cuda") {
    if (attention) {
      return absl::InvalidArgumentError(
          "a custom KvAttentionFactory works only with EngineConfig.device = 'cpu'");
    }
    if (CudaDeviceCount() == 0) {
      return absl::FailedPreconditionError(
          "EngineConfig.device = 'cuda' needs a CUDA device; none was found");
    }
    std::unique_ptr<Scheduler> scheduler(new Scheduler(config));
    RETURN_IF_ERROR(scheduler->CreateCudaPath(*weights));
    return scheduler;
  }
  if (config.device != "cpu") {
    return absl::InvalidArgumentError(absl::StrCat("Scheduler: EngineConfig.device = '",
                                                   config.device,
                                                   "' is invalid: must be cpu or cuda (resolved)"));
  }
  if (config.kv_gpu_memory_fraction != 0.0) {
    return absl::InvalidArgumentError(
        "EngineConfig.kv_gpu_memory_fraction needs device cuda, but the device is cpu");
  }
  std::unique_ptr<Scheduler> scheduler(new Scheduler(config));
  ASSIGN_OR_RETURN(scheduler->cache_, KvCache::Create(config.KvConfig(model), MemoryKind::kHost));
  ASSIGN_OR_RETURN(
      scheduler->model_,
      CpuLlamaModel::Create(std::move(weights), config.max_step_tokens, config.threads));
  if (attention) {
    ASSIGN_OR_RETURN(scheduler->attention_, attention(scheduler->cache_.get(), model, config));
  } else {
    ASSIGN_OR_RETURN(scheduler->attention_,
                     Int4KvAttention::Create(scheduler->cache_.get(), model.q_heads,
                                             config.max_step_tokens, config.threads));
  }
  scheduler->logits_.resize(static_cast<size_t>(config.max_batch) * model.vocab_size);
  return scheduler;
}

Scheduler::Scheduler(const EngineConfig& config)
    : config_(config), sampled_tokens_(config.max_batch), sampling_pool_(config.threads) {}

void Scheduler::BindStepThread() {
  if (cuda_device_ < 0) return;
  if (const cudaError_t e = cudaSetDevice(cuda_device_); e != cudaSuccess) {
    bind_failure_ = absl::UnavailableError(
        absl::StrCat("the engine's step thread could not select CUDA device ", cuda_device_,
                     ", the one the engine was created on: ", cudaGetErrorString(e)));
  }
}

absl::Status Scheduler::CreateCudaPath(const LlamaWeights& weights) {
  CUDA_RETURN_IF_ERROR(cudaGetDevice(&cuda_device_));
  const ModelConfig& model = weights.config;
  CudaModelOptions options;
  options.max_step_tokens = config_.max_step_tokens;
  options.max_logit_rows = config_.max_batch;
  options.dtype = config_.cuda_dtype;
  ASSIGN_OR_RETURN(std::unique_ptr<CudaLlamaModel> cuda_model,
                   CudaLlamaModel::Create(weights, options));
  // The model's weights, activations and cuBLAS workspace are on the device now, so the free
  // memory measured here is what the cache, the attention and the graphs can have.
  if (config_.kv_gpu_memory_fraction > 0.0) {
    ASSIGN_OR_RETURN(kv_gpu_sizing_,
                     SizeKvCacheForFreeGpuMemory(
                         config_.KvConfig(model), config_.kv_gpu_memory_fraction, model.q_heads,
                         config_.max_step_tokens, config_.cuda_dtype, cuda_model->stream()));
    config_.kv_capacity_slots = kv_gpu_sizing_.capacity_slots;
  }
  ASSIGN_OR_RETURN(cache_, KvCache::Create(config_.KvConfig(model), MemoryKind::kDevice));
  ASSIGN_OR_RETURN(std::unique_ptr<CudaKvAttention> attention,
                   CudaKvAttention::Create(cache_.get(), model.q_heads, config_.max_step_tokens,
                                           config_.cuda_dtype, cuda_model->stream()));
  if (config_.cuda_graphs) RETURN_IF_ERROR(cuda_model->CaptureDecodeGraphs(*attention));
  cuda_model_ = cuda_model.get();
  model_ = std::move(cuda_model);
  attention_ = std::move(attention);
  logits_.resize(static_cast<size_t>(config_.max_batch) * model.vocab_size);
  greedy_tokens_.resize(config_.max_batch);
  return absl::OkStatus();
}

std::vector<int32_t> Scheduler::graph_buckets() const {
  if (cuda_model_ == nullptr || !cuda_model_->graphs_captured()) return {};
  return cuda_model_->buckets();
}

int64_t Scheduler::SlotsNeeded(const GenerateRequest& request) {
  return static_cast<int64_t>(request.prompt.size()) + request.max_new_tokens;
}

bool Scheduler::CanAdmit(const PendingRequest& pending) const {
  return running() < config_.max_batch && cache_->requests().live_count() < config_.max_batch &&
         cache_->slots().free_count() >= SlotsNeeded(pending.request);
}

void Scheduler::Admit(PendingRequest pending) {
  const Sampler sampler(pending.request.sampling, pending.seed);
  auto r = std::make_unique<Running>(Running{std::move(pending), sampler});
  absl::StatusOr<int32_t> row = cache_->requests().AllocateRequest();
  CheckOk(row.status(), "AllocateRequest after CanAdmit");
  r->table_row = *row;
  CheckOk(cache_->slots().Allocate(SlotsNeeded(r->pending.request), &r->slots),
          "slot Allocate after CanAdmit");
  running_.push_back(std::move(r));
}

Usage Scheduler::UsageOf(const Running& r, absl::Time now) const {
  Usage usage;
  usage.prompt_tokens = static_cast<int32_t>(r.pending.request.prompt.size());
  usage.generated_tokens = r.generated;
  if (r.first_token_time != absl::InfinitePast()) {
    usage.time_to_first_token = r.first_token_time - r.pending.submit_time;
  }
  usage.total_time = now - r.pending.submit_time;
  return usage;
}

void Scheduler::Finish(size_t index, FinishReason reason, const absl::Status& status) {
  Running& r = *running_[index];
  r.pending.stream->Finish(reason, status, UsageOf(r, MonotonicNow()));
  CheckOk(cache_->slots().Free(r.slots), "freeing a finished request's slots");
  CheckOk(cache_->requests().FreeRequest(r.table_row), "freeing a finished request's row");
  running_.erase(running_.begin() + index);
}

bool Scheduler::Cancel(uint64_t id, FinishReason reason, const absl::Status& status) {
  for (size_t i = 0; i < running_.size(); ++i) {
    if (running_[i]->pending.id == id) {
      Finish(i, reason, status);
      return true;
    }
  }
  return false;
}

void Scheduler::CancelAll(FinishReason reason, const absl::Status& status) {
  while (!running_.empty()) Finish(running_.size() - 1, reason, status);
}

int32_t Scheduler::AddTokens(Running& r, int32_t budget) {
  const std::vector<int32_t>& prompt = r.pending.request.prompt;
  const int32_t prompt_len = static_cast<int32_t>(prompt.size());
  int32_t count;
  if (r.computed >= prompt_len) {
    count = 1;  // decode: the last sampled token goes in at position `computed`
    batch_.AddToken(r.last_token, r.computed, r.slots[r.computed], r.table_row);
  } else {
    count = std::min(budget, prompt_len - r.computed);  // a prefill chunk
    for (int32_t p = r.computed; p < r.computed + count; ++p) {
      batch_.AddToken(prompt[p], p, r.slots[p], r.table_row);
    }
  }
  CheckOk(cache_->requests().Append(r.table_row,
                                    absl::MakeConstSpan(r.slots).subspan(r.computed, count)),
          "req_to_token Append");
  r.computed += count;
  if (r.computed >= prompt_len) {  // samples this step
    batch_.logit_tokens.push_back(batch_.num_tokens() - 1);
    logit_owner_.push_back(&r);
  }
  return count;
}

bool Scheduler::TakeToken(Running& r, int32_t token, FinishReason* reason) {
  const GenerateRequest& request = r.pending.request;
  ++r.generated;
  r.last_token = token;
  if (r.first_token_time == absl::InfinitePast()) r.first_token_time = MonotonicNow();
  r.pending.stream->PushToken(token);
  if (std::find(request.stop_token_ids.begin(), request.stop_token_ids.end(), token) !=
      request.stop_token_ids.end()) {
    *reason = FinishReason::kStop;
    return true;
  }
  if (!request.ignore_eos && token == model_->config().eos_token) {
    *reason = FinishReason::kEos;
    return true;
  }
  if (r.generated >= request.max_new_tokens) {
    *reason = FinishReason::kLength;
    return true;
  }
  return false;
}

std::vector<uint64_t> Scheduler::Step() {
  Advance().IgnoreError();  // a failed step's requests are retired with the error
  return RetireFinished();
}

std::vector<uint64_t> Scheduler::RetireFinished() {
  std::vector<uint64_t> finished;
  for (const Retirement& retirement : to_retire_) {
    if (Cancel(retirement.id, retirement.reason, retirement.status)) {
      finished.push_back(retirement.id);
    }
  }
  to_retire_.clear();
  return finished;
}

absl::Status Scheduler::Advance() {
  if (running_.empty()) return absl::OkStatus();
  batch_.Clear();
  logit_owner_.clear();
  int32_t budget = config_.max_step_tokens;
  // Decode tokens first (one per request past its prompt; max_step_tokens >= max_batch keeps
  // room for all of them), then prefill chunks in admission order.
  for (auto& r : running_) {
    if (r->computed >= static_cast<int32_t>(r->pending.request.prompt.size())) {
      budget -= AddTokens(*r, budget);
    }
  }
  for (auto& r : running_) {
    if (budget == 0) break;
    if (r->computed < static_cast<int32_t>(r->pending.request.prompt.size())) {
      budget -= AddTokens(*r, budget);
    }
  }

  // With the CUDA model, a step whose requests all sample greedily takes the device's argmax
  // and copies no logits.
  const bool device_greedy =
      cuda_model_ != nullptr &&
      std::all_of(logit_owner_.begin(), logit_owner_.end(),
                  [](const Running* r) { return SamplesGreedily(r->pending.request.sampling); });
  // A step thread that could not select the engine's device fails every step as a model
  // step would, so that its requests end INTERNAL like any other failed step's.
  absl::Status status = bind_failure_;
  if (status.ok()) status = attention_->Plan(batch_);
  if (status.ok()) {
    status = device_greedy ? cuda_model_->ForwardGreedy(batch_, *attention_, greedy_tokens_.data())
                           : model_->Forward(batch_, *attention_, logits_.data());
  }
  if (!status.ok()) {
    // Every request with a token in this step failed; the others did not take part.
    // INTERNAL whatever the step returned: the request was valid (the server checked it), so
    // a client must not read the failure as its own (INVALID_ARGUMENT means nothing changed).
    const absl::Status error =
        absl::InternalError(absl::StrCat("model step failed: ", status.ToString()));
    for (const auto& r : running_) {
      const int32_t row = r->table_row;
      if (std::any_of(batch_.rows.begin(), batch_.rows.end(),
                      [row](const DecodeRow& d) { return d.request == row; })) {
        to_retire_.push_back(Retirement{r->pending.id, FinishReason::kError, error});
      }
    }
    return status;
  }
  const int32_t vocab = model_->config().vocab_size;
  if (!device_greedy) {
    // A request has at most one logit row a step, so no sampler runs twice at once. A top_p
    // row at a 32K vocabulary takes about 0.4 ms, a temperature-only one 0.2 ms.
    sampling_pool_.ParallelFor(static_cast<int64_t>(logit_owner_.size()), [&](int64_t i) {
      sampled_tokens_[i] = logit_owner_[i]->sampler.Sample(
          absl::MakeConstSpan(logits_.data() + i * static_cast<size_t>(vocab), vocab));
    });
  }
  for (size_t i = 0; i < logit_owner_.size(); ++i) {
    Running& r = *logit_owner_[i];
    const int32_t token = device_greedy ? greedy_tokens_[i] : sampled_tokens_[i];
    if (token < 0) {
      // Every logit of the row is NaN: the model overflowed on this request's values (fp16 or
      // bf16 past 65504 on the cuda path), so it has no token to stream. The request fails;
      // the step and the other rows stand.
      to_retire_.push_back(Retirement{
          r.pending.id, FinishReason::kError,
          absl::InternalError("the model's logits for this request are all NaN (a numeric "
                              "overflow in the forward pass); no token was generated")});
      continue;
    }
    FinishReason reason;
    if (TakeToken(r, token, &reason)) {
      to_retire_.push_back(Retirement{r.pending.id, reason, absl::OkStatus()});
    }
  }
  return absl::OkStatus();
}

}  // namespace int4kv
