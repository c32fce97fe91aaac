// A Llama model's weights on the device, converted once at start-up from the host float32
// LlamaWeights: matrices in float16 or bfloat16 (the model's dtype), norm weights in float32.
// Projections that read the same input are fused into one matrix so one GEMM computes them:
//
//   wqkv  [(q_heads + 2 * kv_heads) * head_dim][dim]   rows: wq, then wk, then wv
//   w13   [2 * hidden_dim][dim]                         rows: w1 (gate), then w3 (up)
//
// Every other matrix keeps the llama2.c orientation [out_features][in_features].
//
// Ownership: DeviceLlamaWeights owns its device memory; the host weights can be dropped after
// Upload returns.
#ifndef INT4KV_SERVER_CUDA_DEVICE_WEIGHTS_H_
#define INT4KV_SERVER_CUDA_DEVICE_WEIGHTS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/cuda_stream.h"
#include "common/device_memory.h"
#include "common/dtype.h"
#include "server/llama_weights.h"

namespace int4kv {

struct DeviceLayerWeights {
  DeviceBuffer attention_norm;  // [dim] float32
  DeviceBuffer wqkv;            // [qkv_dim][dim] dtype
  DeviceBuffer wo;              // [dim][q_heads * head_dim] dtype
  DeviceBuffer ffn_norm;        // [dim] float32
  DeviceBuffer w13;             // [2 * hidden_dim][dim] dtype
  DeviceBuffer w2;              // [dim][hidden_dim] dtype
};

struct DeviceLlamaWeights {
  ModelConfig config;
  DType dtype = DType::kFloat16;
  DeviceBuffer token_embedding;            // [vocab][dim] dtype
  std::vector<DeviceLayerWeights> layers;  // [num_layers]
  DeviceBuffer final_norm;                 // [dim] float32
  DeviceBuffer classifier;                 // [vocab][dim] dtype; empty when shared

  // The LM head [vocab][dim]: the classifier, or the token embedding when shared.
  const void* lm_head() const {
    return config.shared_classifier ? token_embedding.get() : classifier.get();
  }
  // Bytes of every device tensor.
  int64_t bytes() const;
  // Bytes a decode step reads once: every tensor but a token embedding that is not the LM
  // head (of which a step reads only its tokens' rows).
  int64_t step_read_bytes() const;

  // Converts `weights` (which must Validate) to `dtype` (float16 or bfloat16) on the device.
  // Host data goes through one fixed device staging buffer, converted by a kernel on `stream`;
  // returns when the device copies are complete. ResourceExhausted names the tensor that did
  // not fit.
  static absl::StatusOr<DeviceLlamaWeights> Upload(const LlamaWeights& weights, DType dtype,
                                                   CudaStream stream);
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_CUDA_DEVICE_WEIGHTS_H_
