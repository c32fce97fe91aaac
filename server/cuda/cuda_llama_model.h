// The Llama forward pass on CUDA: weights in float16 or bfloat16 on the device (converted from
// LlamaWeights at creation), GEMMs on cuBLAS with float32 accumulation, small kernels for the
// rest (llama_kernels.h), attention through CudaKvAttention over the device INT4 cache.
//
// Per step (n tokens, m of them sampling):
//   x = embed(tokens)                                   x: [rows][dim] float32 (residual)
//   per layer: xb = rmsnorm(x); qkv = xb wqkv^T; RoPE (Q into q, K in place);
//              store K/V; attn = attention(q); x += attn wo^T (the GEMM accumulates into x);
//              xb = rmsnorm(x); gate_up = xb w13^T; h = silu(gate) * up; x += h w2^T
//   final = rmsnorm(x[logit tokens]); logits = final lm_head^T; argmax per logit row
// with half-precision activations between the ops and float32 residual, logits and norms.
//
// Decode buckets and CUDA graphs: a decode-only step (every token samples, so one token per
// request) of n tokens runs at the bucket b = BucketFor(DecodeBuckets(max_logit_rows), n):
// rows n..b-1 are padded (token 0 at position 0, seq_len 0, K/V written to slot 0). It runs so
// whether or not graphs are on, so turning graphs off changes no result. After
// CaptureDecodeGraphs, such a step copies its metadata into the fixed buffers, plans the
// attention for b rows (outside capture, on stream()) and replays b's graph. Prefill and mixed
// steps, and decode steps above the largest bucket, run eagerly with exactly n rows.
//
// Memory: every device buffer is allocated at creation, sized for max_step_tokens tokens and
// max_logit_rows logit rows; steps allocate nothing.
//
// Thread ownership: used by the engine's scheduler thread only (creation may happen on another
// thread before that one starts).
#ifndef INT4KV_SERVER_CUDA_CUDA_LLAMA_MODEL_H_
#define INT4KV_SERVER_CUDA_CUDA_LLAMA_MODEL_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/cuda_stream.h"
#include "common/device_memory.h"
#include "common/dtype.h"
#include "server/cuda/cublas_gemm.h"
#include "server/cuda/cuda_graph.h"
#include "server/cuda/cuda_kv_attention.h"
#include "server/cuda/device_weights.h"
#include "server/cuda/kernel_timer.h"
#include "server/llama_weights.h"
#include "server/model.h"

namespace int4kv {

struct CudaModelOptions {
  int32_t max_step_tokens = 0;    // tokens per Forward, >= 1; sizes the activations
  int32_t max_logit_rows = 0;     // logit rows per Forward (the engine's max_batch), in
                                  // [1, max_step_tokens]; also the decode buckets' cap
  DType dtype = DType::kFloat16;  // weights and activations: float16 or bfloat16
};

class CudaLlamaModel : public Model {
 public:
  // Converts `weights` to the device (it need not outlive the model) and allocates every
  // buffer. FailedPrecondition without a CUDA device; ResourceExhausted when something does
  // not fit (the message names it).
  static absl::StatusOr<std::unique_ptr<CudaLlamaModel>> Create(const LlamaWeights& weights,
                                                                const CudaModelOptions& options);
  ~CudaLlamaModel() override;

  absl::string_view name() const override { return "cuda"; }
  const ModelConfig& config() const override { return weights_.config; }
  int32_t max_step_tokens() const override { return options_.max_step_tokens; }

  // `attention` must be a CudaKvAttention on stream(), planned with `batch`.
  //   logits: host [batch.logit_tokens.size()][vocab_size] float32.
  absl::Status Forward(const StepBatch& batch, KvAttention& attention, float* logits) override;
  // The same step, returning only the greedy choice of each logit row, computed on the device
  // (ArgMax of sampler.h: lowest id on ties, -1 for a row of NaN alone).
  // tokens: host [batch.logit_tokens.size()].
  absl::Status ForwardGreedy(const StepBatch& batch, KvAttention& attention, int32_t* tokens);

  // Captures one decode graph per bucket over `attention` (which must outlive every later
  // step that uses the graphs; other attentions run eagerly). Each bucket first runs once
  // eagerly as a warm-up (loading kernels, choosing cuBLAS algorithms) with every row padded,
  // so it writes only the reserved slot 0. Call once at start-up, before the first step.
  absl::Status CaptureDecodeGraphs(CudaKvAttention& attention);

  // Benchmark support. ProfileStep runs the step like ForwardGreedy but always eagerly (with
  // the same bucket padding), with `timer` events around every launch after a Hold.
  absl::Status ProfileStep(const StepBatch& batch, KvAttention& attention, KernelTimer& timer,
                           int32_t* tokens);
  // Replays the graph of the last step `iterations` times back to back (the last step must
  // have replayed a graph; its plan and metadata are reused) and returns the mean device
  // milliseconds per replay.
  absl::StatusOr<double> TimeGraphReplays(int32_t iterations);

  CudaStream stream() const { return stream_.get(); }
  DType dtype() const { return options_.dtype; }
  const std::vector<int32_t>& buckets() const { return buckets_; }
  bool graphs_captured() const { return graph_attention_ != 0; }
  int64_t graph_replays() const { return graph_replays_; }
  int64_t weight_bytes() const { return weights_.bytes(); }
  // What a decode step reads of the weights (DeviceLlamaWeights::step_read_bytes).
  int64_t weight_step_read_bytes() const { return weights_.step_read_bytes(); }

 private:
  explicit CudaLlamaModel(const CudaModelOptions& options);

  absl::Status Allocate();
  // The step behind Forward, ForwardGreedy and ProfileStep: exactly one of logits and tokens
  // is set; timer non-null forces the eager path.
  absl::Status Step(const StepBatch& batch, KvAttention& attention, float* logits, int32_t* tokens,
                    KernelTimer* timer);
  // Writes the step's TokenMeta (padded to `rows`) into meta_, ordered on stream().
  absl::Status UploadMeta(const StepBatch& batch, int32_t rows);
  // Queues the whole forward pass over `rows` rows and `logit_rows` logit rows.
  absl::Status Launch(int32_t rows, int32_t logit_rows, CudaKvAttention& attention,
                      KernelTimer* timer);
  int32_t BucketIndex(int32_t bucket) const;

  const CudaModelOptions options_;
  OwnedStream stream_;  // every launch, copy and capture of the model and its attention
  std::unique_ptr<CublasGemm> gemm_;
  DeviceLlamaWeights weights_;
  std::vector<int32_t> buckets_;  // DecodeBuckets(max_logit_rows)

  // Activations (T = max_step_tokens rows, L = max_logit_rows rows; dtype unless noted).
  DeviceBuffer x_;             // [T][dim] float32, the residual stream
  DeviceBuffer xb_;            // [T][dim] normed input of a sub-block
  DeviceBuffer qkv_;           // [T][(q_heads + 2 * kv_heads) * head_dim]
  DeviceBuffer q_;             // [T][q_heads][head_dim] rotated queries
  DeviceBuffer attn_;          // [T][q_heads][head_dim] attention output
  DeviceBuffer gate_up_;       // [T][2 * hidden_dim]
  DeviceBuffer ffn_;           // [T][hidden_dim] silu(gate) * up
  DeviceBuffer final_;         // [L][dim] normed logit rows
  DeviceBuffer logits_;        // [L][vocab] float32
  DeviceBuffer argmax_;        // [L] int32
  DeviceBuffer meta_;          // [T] TokenMeta
  PinnedBuffer meta_staging_;  // [T] TokenMeta, source of the metadata copy
  OwnedEvent meta_done_;       // recorded after each metadata copy

  std::vector<CudaGraph> graphs_;                     // [buckets_.size()] once captured
  uint64_t graph_attention_ = 0;  // CudaKvAttention::id() of the attention the graphs read
  int32_t last_graph_ = -1;  // index into graphs_ of the last step's replay, -1: eager
  int64_t graph_replays_ = 0;
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_CUDA_CUDA_LLAMA_MODEL_H_
