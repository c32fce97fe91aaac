// The language model as the engine sees it: one forward pass over a step's tokens, producing
// logits for the tokens that sample. CpuLlamaModel (cpu_llama_model.h) is the float32 CPU
// implementation; a CUDA model (cuBLAS GEMMs and small kernels over fp16/bf16 weights, with a
// device KvAttention) implements the same interface.
//
// Thread ownership: used by the engine's scheduler thread only.
#ifndef INT4KV_SERVER_MODEL_H_
#define INT4KV_SERVER_MODEL_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/kv_attention.h"
#include "server/model_config.h"
#include "server/step_batch.h"

namespace int4kv {

class Model {
 public:
  virtual ~Model() = default;

  virtual absl::string_view name() const = 0;  // "cpu", ...
  virtual const ModelConfig& config() const = 0;
  // Most tokens one Forward accepts (activation buffers are sized for it at creation).
  virtual int32_t max_step_tokens() const = 0;

  // Runs every layer over batch's tokens, writing their K/V through `attention` (which has
  // been Planned with the same batch), then the final norm and LM head for the logit tokens.
  //   logits: host [batch.logit_tokens.size()][vocab_size] float32
  virtual absl::Status Forward(const StepBatch& batch, KvAttention& attention, float* logits) = 0;
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_MODEL_H_
