// One engine step's tokens, flattened: prefill chunks and decode tokens alike. Every token is
// one query row of attention whose context is its own request's tokens 0..position, so a
// prompt prefilled in one step (or in chunks over several) is causal by construction.
//
// Built on the engine's scheduler thread; read by the model and the KV attention during that
// step's Forward.
#ifndef INT4KV_SERVER_STEP_BATCH_H_
#define INT4KV_SERVER_STEP_BATCH_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "backend/decode_attention_backend.h"
#include "kv_cache/request_table.h"
#include "server/model_config.h"

namespace int4kv {

struct StepBatch {
  std::vector<int32_t> tokens;     // [num_tokens] input token ids
  std::vector<int32_t> positions;  // [num_tokens] position of each token in its sequence
  std::vector<int32_t> slots;      // [num_tokens] KV slot each token's K/V are written to
  // [num_tokens] attention row of each token: its req_to_token row, seq_len = position + 1.
  // The req_to_token row already lists the slots of tokens 0..position when Forward runs.
  std::vector<DecodeRow> rows;
  // Indices into tokens whose logits the step needs (the last token of each request that
  // samples this step), ascending.
  std::vector<int32_t> logit_tokens;

  int32_t num_tokens() const { return static_cast<int32_t>(tokens.size()); }

  void Clear() {
    tokens.clear();
    positions.clear();
    slots.clear();
    rows.clear();
    logit_tokens.clear();
  }

  void AddToken(int32_t token, int32_t position, int32_t slot, int32_t request) {
    tokens.push_back(token);
    positions.push_back(position);
    slots.push_back(slot);
    rows.push_back(DecodeRow{request, position + 1});
  }
};

// Checks what a KvAttention's Plan reads: one slot and one attention row per token, each row
// over its whole context (first_token 0), and each token's slot the entry of its row's last
// position in `table` (the slot its K/V are written to is the one attention reads for it).
// InvalidArgument otherwise, naming the token. Rows whose request or length is out of the table's
// range are left to the backend's Plan, which names them.
absl::Status CheckSlotsAndRows(const StepBatch& batch, const RequestTable& table);

// Checks a step for a model: 1..max_step_tokens tokens, one position/slot/row per token,
// token ids in the vocabulary, positions below max_seq_len, and at most max_logit_rows
// logit_tokens, ascending and in range. Errors name the field and the limit.
absl::Status ValidateStepBatch(const StepBatch& batch, const ModelConfig& model,
                               int32_t max_step_tokens, int32_t max_logit_rows);

}  // namespace int4kv

#endif  // INT4KV_SERVER_STEP_BATCH_H_
