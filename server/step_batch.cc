#include "server/step_batch.h"

#include "absl/strings/str_cat.h"

namespace int4kv {

absl::Status CheckSlotsAndRows(const StepBatch& batch, const RequestTable& table) {
  if (batch.slots.size() != batch.tokens.size() || batch.rows.size() != batch.tokens.size()) {
    return absl::InvalidArgumentError("StepBatch.slots and rows must have one entry per token");
  }
  for (size_t i = 0; i < batch.rows.size(); ++i) {
    const DecodeRow& row = batch.rows[i];
    if (row.first_token != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("StepBatch.rows[", i, "].first_token = ", row.first_token,
                       " is not 0: a step's token attends its whole context, itself included"));
    }
    if (row.request < 0 || row.request >= table.max_requests() || row.seq_len < 1 ||
        row.seq_len > table.Length(row.request)) {
      continue;  // the backend's Plan names it
    }
    const int32_t entry = table.Tokens(row.request)[row.seq_len - 1];
    if (batch.slots[i] != entry) {
      return absl::InvalidArgumentError(absl::StrCat(
          "StepBatch.slots[", i, "] = ", batch.slots[i], " is not its row's slot: request ",
          row.request, " holds slot ", entry, " at position ", row.seq_len - 1));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateStepBatch(const StepBatch& batch, const ModelConfig& model,
                               int32_t max_step_tokens, int32_t max_logit_rows) {
  const int32_t n = batch.num_tokens();
  if (n < 1 || n > max_step_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("step of ", n, " tokens is out of range [1, ",
                                                   max_step_tokens, "] (max_step_tokens)"));
  }
  if (batch.positions.size() != batch.tokens.size() || batch.slots.size() != batch.tokens.size() ||
      batch.rows.size() != batch.tokens.size()) {
    return absl::InvalidArgumentError(
        "StepBatch.positions, slots and rows must have one entry per token");
  }
  for (int32_t i = 0; i < n; ++i) {
    if (batch.tokens[i] < 0 || batch.tokens[i] >= model.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("StepBatch.tokens[", i, "] = ", batch.tokens[i], " is out of range [0, ",
                       model.vocab_size, ")"));
    }
    if (batch.positions[i] < 0 || batch.positions[i] >= model.max_seq_len) {
      return absl::InvalidArgumentError(
          absl::StrCat("StepBatch.positions[", i, "] = ", batch.positions[i],
                       " is out of range [0, ", model.max_seq_len, ")"));
    }
  }
  const size_t m = batch.logit_tokens.size();
  if (m > static_cast<size_t>(max_logit_rows)) {
    return absl::InvalidArgumentError(absl::StrCat("step samples ", m, " tokens, more than ",
                                                   max_logit_rows, " (max_logit_rows)"));
  }
  for (size_t i = 0; i < m; ++i) {
    const int32_t t = batch.logit_tokens[i];
    if (t < 0 || t >= n || (i > 0 && t <= batch.logit_tokens[i - 1])) {
      return absl::InvalidArgumentError(absl::StrCat("StepBatch.logit_tokens[", i, "] = ", t,
                                                     " must be ascending and in [0, ", n, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace int4kv
