// The small CUDA kernels of the Llama forward pass (everything but the GEMMs, which go through
// cuBLAS, and attention, which is the decode backend). Every launcher is asynchronous on
// `stream`, allocates nothing, is capturable in a CUDA graph, returns the status of its own
// launch (not an earlier error left on the thread), and does nothing for zero rows. `dtype` is the
// element type of the model's half-precision tensors: float16 or bfloat16 (anything else is
// InvalidArgument). Arithmetic is float32 throughout, with the CPU path's formulas
// (server/cpu_ops.h).
//
// Reductions (RMSNorm, argmax) use one block per row in a fixed order, so a row's result does
// not depend on the other rows of the batch.
#ifndef INT4KV_SERVER_CUDA_LLAMA_KERNELS_H_
#define INT4KV_SERVER_CUDA_LLAMA_KERNELS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "common/cuda_stream.h"
#include "common/dtype.h"

namespace int4kv {

// Per-token step metadata, one device array [rows] written by the host before each step.
// Plain data shared with kernels.
struct TokenMeta {
  int32_t token;      // input token id
  int32_t position;   // position in its sequence (RoPE angle)
  int32_t logit_row;  // for entries [0, logit rows): the token whose logits are wanted
};

// out[i] = dtype(in[i]) for i in [0, count), round to nearest even.
absl::Status LaunchConvertFloat(const float* in, int64_t count, DType dtype, void* out,
                                CudaStream stream);

// x[r][:] = float(table[meta[r].token][:]).  table: [vocab][dim] dtype;  x: [rows][dim] float32.
absl::Status LaunchEmbedding(const void* table, DType dtype, const TokenMeta* meta, int32_t rows,
                             int32_t dim, float* x, CudaStream stream);

// out[r] = x[s] / sqrt(mean(x[s]^2) + eps) * weight with s = r, or s = meta[r].logit_row when
// `meta` is not null (the final norm gathers the logit rows).
//   x: [*][dim] float32;  weight: [dim] float32;  out: [rows][dim] dtype.
absl::Status LaunchRmsNorm(const float* x, const TokenMeta* meta, const float* weight, int32_t rows,
                           int32_t dim, float eps, DType dtype, void* out, CudaStream stream);

// RoPE over pairs (2i, 2i + 1) of each head, angle meta[r].position * theta^(-2i / head_dim).
//   qkv: [rows][(q_heads + 2 * kv_heads) * head_dim] dtype (the fused projection: Q, K, V);
//   K is rotated in place, Q is rotated into q_out: [rows][q_heads * head_dim] dtype.
absl::Status LaunchRope(void* qkv, const TokenMeta* meta, int32_t rows, int32_t q_heads,
                        int32_t kv_heads, int32_t head_dim, float theta, DType dtype, void* q_out,
                        CudaStream stream);

// out[r][j] = silu(gate_up[r][j]) * gate_up[r][hidden + j].
//   gate_up: [rows][2 * hidden] dtype;  out: [rows][hidden] dtype.
absl::Status LaunchSwiGlu(const void* gate_up, int32_t rows, int32_t hidden, DType dtype, void* out,
                          CudaStream stream);

// out[r] = the index of the largest logits[r][:], lowest index on ties, NaN never winning
// (ArgMax in server/sampler.h, so device and host greedy choices agree).
//   logits: [rows][vocab] float32;  out: [rows] int32.
absl::Status LaunchArgMax(const float* logits, int32_t rows, int32_t vocab, int32_t* out,
                          CudaStream stream);

// One thread that spins for `nanoseconds` (device global timer): holds a stream back while the
// host queues work behind it, so timed launches are not separated by host latency.
absl::Status LaunchSpin(int64_t nanoseconds, CudaStream stream);

}  // namespace int4kv

#endif  // INT4KV_SERVER_CUDA_LLAMA_KERNELS_H_
