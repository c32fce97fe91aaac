#include "server/cuda/cuda_llama_model.h"

#include <cuda_runtime.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/cuda_check.h"
#include "common/status_macros.h"
#include "server/cuda/decode_buckets.h"
#include "server/cuda/llama_kernels.h"

namespace int4kv {
namespace {

// Runs `launch`, with timer events around it when timer is non-null.
template <typename Launch>
absl::Status Timed(KernelTimer* timer, const char* op, CudaStream stream, Launch&& launch) {
  if (timer != nullptr) RETURN_IF_ERROR(timer->Begin(op, stream));
  RETURN_IF_ERROR(launch());
  if (timer != nullptr) RETURN_IF_ERROR(timer->End(stream));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<CudaLlamaModel>> CudaLlamaModel::Create(
    const LlamaWeights& weights, const CudaModelOptions& options) {
  RETURN_IF_ERROR(weights.Validate());
  if (options.max_step_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("CudaModelOptions.max_step_tokens = ", options.max_step_tokens,
                     " is invalid: must be >= 1"));
  }
  if (options.max_logit_rows < 1 || options.max_logit_rows > options.max_step_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CudaModelOptions.max_logit_rows = ", options.max_logit_rows,
        " is invalid: must be in [1, ", options.max_step_tokens, "] (max_step_tokens)"));
  }
  if (options.dtype != DType::kFloat16 && options.dtype != DType::kBFloat16) {
    return absl::InvalidArgumentError(
        absl::StrCat("CudaModelOptions.dtype = ", DTypeName(options.dtype),
                     " is invalid: must be float16 or bfloat16"));
  }
  if (CudaDeviceCount() == 0) {
    return absl::FailedPreconditionError("the CUDA model needs a CUDA device; none was found");
  }
  std::unique_ptr<CudaLlamaModel> model(new CudaLlamaModel(options));
  RETURN_IF_ERROR(model->stream_.Create());
  ASSIGN_OR_RETURN(model->gemm_, CublasGemm::Create(model->stream()));
  ASSIGN_OR_RETURN(model->weights_,
                   DeviceLlamaWeights::Upload(weights, options.dtype, model->stream()));
  RETURN_IF_ERROR(model->Allocate());
  return model;
}

CudaLlamaModel::CudaLlamaModel(const CudaModelOptions& options)
    : options_(options), buckets_(DecodeBuckets(options.max_logit_rows)) {}

CudaLlamaModel::~CudaLlamaModel() {
  // Nothing may still read the buffers (or the pinned staging) when they are freed.
  if (stream_.get() != nullptr) cudaStreamSynchronize(stream_.get());
}

absl::Status CudaLlamaModel::Allocate() {
  const ModelConfig& c = weights_.config;
  const size_t t = options_.max_step_tokens;
  const size_t l = options_.max_logit_rows;
  const size_t h = DTypeSize(options_.dtype);
  const size_t q_dim = static_cast<size_t>(c.q_heads) * c.head_dim();
  const size_t qkv_dim = q_dim + 2 * static_cast<size_t>(c.kv_dim());
  RETURN_IF_ERROR(x_.Allocate(t * c.dim * sizeof(float), "the residual stream"));
  RETURN_IF_ERROR(xb_.Allocate(t * c.dim * h, "the normed activations"));
  RETURN_IF_ERROR(qkv_.Allocate(t * qkv_dim * h, "the fused Q/K/V projections"));
  RETURN_IF_ERROR(q_.Allocate(t * q_dim * h, "the rotated queries"));
  RETURN_IF_ERROR(attn_.Allocate(t * q_dim * h, "the attention output"));
  RETURN_IF_ERROR(gate_up_.Allocate(t * 2 * c.hidden_dim * h, "the MLP gate and up projections"));
  RETURN_IF_ERROR(ffn_.Allocate(t * c.hidden_dim * h, "the MLP hidden activations"));
  RETURN_IF_ERROR(final_.Allocate(l * c.dim * h, "the final-norm rows"));
  RETURN_IF_ERROR(logits_.Allocate(l * c.vocab_size * sizeof(float), "the logits"));
  RETURN_IF_ERROR(argmax_.Allocate(l * sizeof(int32_t), "the greedy tokens"));
  RETURN_IF_ERROR(meta_.Allocate(t * sizeof(TokenMeta), "the step metadata"));
  RETURN_IF_ERROR(meta_staging_.Allocate(t * sizeof(TokenMeta), "the step metadata staging"));
  RETURN_IF_ERROR(meta_done_.Create(/*timing=*/false));
  CUDA_RETURN_IF_ERROR(cudaEventRecord(meta_done_.get(), stream()));
  return absl::OkStatus();
}

absl::Status CudaLlamaModel::UploadMeta(const StepBatch& batch, int32_t rows) {
  const int32_t n = batch.num_tokens();
  const int32_t m = static_cast<int32_t>(batch.logit_tokens.size());
  // The pinned staging may still feed the previous step's copy.
  CUDA_RETURN_IF_ERROR(cudaEventSynchronize(meta_done_.get()));
  TokenMeta* meta = meta_staging_.as<TokenMeta>();
  for (int32_t i = 0; i < n; ++i) {
    meta[i] = TokenMeta{batch.tokens[i], batch.positions[i], i < m ? batch.logit_tokens[i] : 0};
  }
  // Padded rows exist only in decode buckets, where logit row i is row i.
  for (int32_t i = n; i < rows; ++i) meta[i] = TokenMeta{0, 0, i};
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(meta_.get(), meta, sizeof(TokenMeta) * rows,
                                       cudaMemcpyHostToDevice, stream()));
  CUDA_RETURN_IF_ERROR(cudaEventRecord(meta_done_.get(), stream()));
  return absl::OkStatus();
}

absl::Status CudaLlamaModel::Launch(int32_t rows, int32_t logit_rows, CudaKvAttention& attention,
                                    KernelTimer* timer) {
  const ModelConfig& c = weights_.config;
  const DType dt = options_.dtype;
  const CudaStream s = stream();
  const int32_t head_dim = c.head_dim();
  const int32_t q_dim = c.q_heads * head_dim;
  const int32_t kv_dim = c.kv_dim();
  const int32_t qkv_dim = q_dim + 2 * kv_dim;
  const size_t h = DTypeSize(dt);
  const TokenMeta* meta = meta_.as<TokenMeta>();
  float* x = x_.as<float>();
  char* qkv = qkv_.as<char>();

  RETURN_IF_ERROR(Timed(timer, "embedding", s, [&] {
    return LaunchEmbedding(weights_.token_embedding.get(), dt, meta, rows, c.dim, x, s);
  }));
  for (int32_t layer = 0; layer < c.num_layers; ++layer) {
    const DeviceLayerWeights& w = weights_.layers[layer];
    // Attention block.
    RETURN_IF_ERROR(Timed(timer, "attention_norm", s, [&] {
      return LaunchRmsNorm(x, nullptr, w.attention_norm.as<float>(), rows, c.dim, c.norm_eps, dt,
                           xb_.get(), s);
    }));
    RETURN_IF_ERROR(Timed(timer, "qkv_gemm", s, [&] {
      return gemm_->Linear(xb_.get(), w.wqkv.get(), qkv, rows, qkv_dim, c.dim, dt, dt, false);
    }));
    RETURN_IF_ERROR(Timed(timer, "rope", s, [&] {
      return LaunchRope(qkv, meta, rows, c.q_heads, c.kv_heads, head_dim, c.rope_theta, dt,
                        q_.get(), s);
    }));
    RETURN_IF_ERROR(Timed(timer, "store_kv", s, [&] {
      return attention.Store(layer, qkv + q_dim * h, qkv + (q_dim + kv_dim) * h, qkv_dim);
    }));
    RETURN_IF_ERROR(
        Timed(timer, "attention", s, [&] { return attention.Run(layer, q_.get(), attn_.get()); }));
    RETURN_IF_ERROR(Timed(timer, "o_gemm", s, [&] {
      return gemm_->Linear(attn_.get(), w.wo.get(), x, rows, c.dim, q_dim, dt, DType::kFloat32,
                           /*accumulate=*/true);
    }));
    // MLP block: w2(silu(w1 x) * w3 x).
    RETURN_IF_ERROR(Timed(timer, "ffn_norm", s, [&] {
      return LaunchRmsNorm(x, nullptr, w.ffn_norm.as<float>(), rows, c.dim, c.norm_eps, dt,
                           xb_.get(), s);
    }));
    RETURN_IF_ERROR(Timed(timer, "gate_up_gemm", s, [&] {
      return gemm_->Linear(xb_.get(), w.w13.get(), gate_up_.get(), rows, 2 * c.hidden_dim, c.dim,
                           dt, dt, false);
    }));
    RETURN_IF_ERROR(Timed(timer, "swiglu", s, [&] {
      return LaunchSwiGlu(gate_up_.get(), rows, c.hidden_dim, dt, ffn_.get(), s);
    }));
    RETURN_IF_ERROR(Timed(timer, "down_gemm", s, [&] {
      return gemm_->Linear(ffn_.get(), w.w2.get(), x, rows, c.dim, c.hidden_dim, dt,
                           DType::kFloat32, /*accumulate=*/true);
    }));
  }
  if (logit_rows == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Timed(timer, "final_norm", s, [&] {
    return LaunchRmsNorm(x, meta, weights_.final_norm.as<float>(), logit_rows, c.dim, c.norm_eps,
                         dt, final_.get(), s);
  }));
  RETURN_IF_ERROR(Timed(timer, "lm_head_gemm", s, [&] {
    return gemm_->Linear(final_.get(), weights_.lm_head(), logits_.get(), logit_rows, c.vocab_size,
                         c.dim, dt, DType::kFloat32, false);
  }));
  return Timed(timer, "argmax", s, [&] {
    return LaunchArgMax(logits_.as<float>(), logit_rows, c.vocab_size, argmax_.as<int32_t>(), s);
  });
}

int32_t CudaLlamaModel::BucketIndex(int32_t bucket) const {
  for (size_t i = 0; i < buckets_.size(); ++i) {
    if (buckets_[i] == bucket) return static_cast<int32_t>(i);
  }
  return -1;
}

absl::Status CudaLlamaModel::Step(const StepBatch& batch, KvAttention& attention, float* logits,
                                  int32_t* tokens, KernelTimer* timer) {
  RETURN_IF_ERROR(
      ValidateStepBatch(batch, config(), options_.max_step_tokens, options_.max_logit_rows));
  auto* cuda_attention = dynamic_cast<CudaKvAttention*>(&attention);
  if (cuda_attention == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the CUDA model needs a CudaKvAttention (device KV cache), not '", attention.name(), "'"));
  }
  if (cuda_attention->stream() != stream() || cuda_attention->io_dtype() != options_.dtype) {
    return absl::InvalidArgumentError("the CudaKvAttention must use the model's stream and dtype");
  }
  const int32_t n = batch.num_tokens();
  if (cuda_attention->planned_tokens() != n) {
    return absl::FailedPreconditionError(absl::StrCat("the attention was planned for ",
                                                      cuda_attention->planned_tokens(),
                                                      " tokens, the step has ", n));
  }
  const int32_t m = static_cast<int32_t>(batch.logit_tokens.size());
  // Every token samples: one token per request, a decode-only step.
  const int32_t bucket = m == n ? BucketFor(buckets_, n) : 0;
  const int32_t rows = bucket > 0 ? bucket : n;
  const int32_t logit_rows = bucket > 0 ? bucket : m;
  // From here the device's metadata and plan are this step's: no earlier graph replays over
  // them (TimeGraphReplays), whether or not the step gets through.
  last_graph_ = -1;
  RETURN_IF_ERROR(cuda_attention->Prepare(rows));
  RETURN_IF_ERROR(UploadMeta(batch, rows));
  if (bucket > 0 && timer == nullptr && graph_attention_ == cuda_attention->id()) {
    const int graph = BucketIndex(bucket);
    RETURN_IF_ERROR(graphs_[graph].Launch(stream()));
    last_graph_ = graph;  // only a graph that launched may be replayed again
    ++graph_replays_;
  } else {
    RETURN_IF_ERROR(Launch(rows, logit_rows, *cuda_attention, timer));
  }
  if (m > 0 && tokens != nullptr) {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(tokens, argmax_.get(), sizeof(int32_t) * m,
                                         cudaMemcpyDeviceToHost, stream()));
  } else if (m > 0 && logits != nullptr) {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits, logits_.get(),
                                         sizeof(float) * m * config().vocab_size,
                                         cudaMemcpyDeviceToHost, stream()));
  }
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream()));
  return absl::OkStatus();
}

absl::Status CudaLlamaModel::Forward(const StepBatch& batch, KvAttention& attention,
                                     float* logits) {
  return Step(batch, attention, logits, nullptr, nullptr);
}

absl::Status CudaLlamaModel::ForwardGreedy(const StepBatch& batch, KvAttention& attention,
                                           int32_t* tokens) {
  return Step(batch, attention, nullptr, tokens, nullptr);
}

absl::Status CudaLlamaModel::ProfileStep(const StepBatch& batch, KvAttention& attention,
                                         KernelTimer& timer, int32_t* tokens) {
  return Step(batch, attention, nullptr, tokens, &timer);
}

absl::Status CudaLlamaModel::CaptureDecodeGraphs(CudaKvAttention& attention) {
  if (graph_attention_ != 0) {
    return absl::FailedPreconditionError("CaptureDecodeGraphs was already called");
  }
  if (attention.stream() != stream() || attention.io_dtype() != options_.dtype) {
    return absl::InvalidArgumentError("the CudaKvAttention must use the model's stream and dtype");
  }
  std::vector<CudaGraph> graphs;
  for (const int32_t bucket : buckets_) {
    // Every row padded: token 0 at position 0, no context, K/V into the reserved slot 0.
    StepBatch padded;
    for (int32_t i = 0; i < bucket; ++i) {
      padded.tokens.push_back(0);
      padded.positions.push_back(0);
      padded.slots.push_back(0);
      padded.rows.push_back(DecodeRow{0, 0});
      padded.logit_tokens.push_back(i);
    }
    RETURN_IF_ERROR(attention.Plan(padded));
    RETURN_IF_ERROR(attention.Prepare(bucket));
    RETURN_IF_ERROR(UploadMeta(padded, bucket));
    RETURN_IF_ERROR(Launch(bucket, bucket, attention, nullptr));  // warm-up
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream()));
    ASSIGN_OR_RETURN(CudaGraph graph, CudaGraph::Capture(stream(), [&] {
                       return Launch(bucket, bucket, attention, nullptr);
                     }));
    graphs.push_back(std::move(graph));
  }
  graphs_ = std::move(graphs);
  graph_attention_ = attention.id();
  return absl::OkStatus();
}

absl::StatusOr<double> CudaLlamaModel::TimeGraphReplays(int32_t iterations) {
  if (last_graph_ < 0) {
    return absl::FailedPreconditionError("TimeGraphReplays: the last step did not replay a graph");
  }
  if (iterations < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("iterations = ", iterations, " is invalid: must be >= 1"));
  }
  OwnedEvent start, stop;
  RETURN_IF_ERROR(start.Create(/*timing=*/true));
  RETURN_IF_ERROR(stop.Create(/*timing=*/true));
  CUDA_RETURN_IF_ERROR(cudaEventRecord(start.get(), stream()));
  for (int32_t i = 0; i < iterations; ++i) RETURN_IF_ERROR(graphs_[last_graph_].Launch(stream()));
  CUDA_RETURN_IF_ERROR(cudaEventRecord(stop.get(), stream()));
  CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop.get()));
  float ms = 0;
  CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start.get(), stop.get()));
  return static_cast<double>(ms) / iterations;
}

}  // namespace int4kv
