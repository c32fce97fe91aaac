// Loading llama2.c checkpoints (the legacy "version 0" export that run.c reads):
//
//   header   7 x int32 little-endian: dim, hidden_dim, n_layers, n_heads, n_kv_heads,
//            vocab_size, seq_len (vocab_size < 0: the classifier is stored, not shared)
//   float32  token_embedding [vocab][dim]
//            rms_att [layers][dim], wq [layers][dim][dim], wk [layers][kv_dim][dim],
//            wv [layers][kv_dim][dim], wo [layers][dim][dim], rms_ffn [layers][dim],
//            w1 [layers][hidden][dim], w2 [layers][dim][hidden], w3 [layers][hidden][dim],
//            rms_final [dim], two legacy RoPE tables [seq_len][head_dim / 2] each (skipped),
//            wcls [vocab][dim] only when vocab_size < 0
//
// Every failure is an absl::Status naming what is wrong; a bad file never crashes the
// process and nothing is allocated for sizes the file cannot hold.
#ifndef INT4KV_SERVER_LLAMA2C_CHECKPOINT_H_
#define INT4KV_SERVER_LLAMA2C_CHECKPOINT_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/llama_weights.h"
#include "server/model_config.h"

namespace int4kv {

constexpr int64_t kLlama2cHeaderBytes = 7 * 4;

// The header as stored.
struct Llama2cHeader {
  int32_t dim = 0;
  int32_t hidden_dim = 0;
  int32_t n_layers = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t vocab_size = 0;  // negative: unshared classifier
  int32_t seq_len = 0;
};

// Checks the header's fields and turns them into a ModelConfig (llama2.c conventions: RMSNorm
// eps 1e-5, RoPE theta 10000, BOS 1, EOS 2). InvalidArgument names the header field.
absl::StatusOr<ModelConfig> ConfigFromLlama2cHeader(const Llama2cHeader& header);

// Exact size in bytes of a checkpoint with this (valid) config, header included.
int64_t Llama2cFileBytes(const ModelConfig& config);

// Reads and validates a checkpoint. NotFound when the file cannot be opened; InvalidArgument
// for a truncated or oversized file, a bad header, or a non-finite weight; ResourceExhausted when
// the weights do not fit in memory.
absl::StatusOr<LlamaWeights> LoadLlama2cCheckpoint(absl::string_view path);

}  // namespace int4kv

#endif  // INT4KV_SERVER_LLAMA2C_CHECKPOINT_H_
