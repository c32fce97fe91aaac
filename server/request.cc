#include "server/request.h"

#include "absl/strings/str_cat.h"

namespace int4kv {

absl::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kError:
      return "error";
  }
  return "unknown";
}

absl::Status ValidateRequest(const GenerateRequest& request, const RequestLimits& limits) {
  if (request.prompt.empty()) {
    return absl::InvalidArgumentError("prompt is empty: must hold at least 1 token id");
  }
  for (size_t i = 0; i < request.prompt.size(); ++i) {
    const int32_t token = request.prompt[i];
    if (token < 0 || token >= limits.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt[", i, "] = ", token,
                                                     " is invalid: token ids must be in [0, ",
                                                     limits.vocab_size, ")"));
    }
  }
  if (request.max_new_tokens < 1 || request.max_new_tokens > limits.max_new_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("max_new_tokens = ", request.max_new_tokens,
                                                   " is invalid: must be in [1, ",
                                                   limits.max_new_tokens, "]"));
  }
  if (absl::Status s = ValidateSamplingParams(request.sampling); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.", s.message()));  // the proto field
  }
  if (request.stop_token_ids.size() > static_cast<size_t>(kMaxStopTokens)) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.stop_token_ids has ",
                                                   request.stop_token_ids.size(),
                                                   " entries: at most ", kMaxStopTokens));
  }
  for (size_t i = 0; i < request.stop_token_ids.size(); ++i) {
    const int32_t token = request.stop_token_ids[i];
    if (token < 0 || token >= limits.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("sampling.stop_token_ids[", i, "] = ", token,
                                                     " is invalid: token ids must be in [0, ",
                                                     limits.vocab_size, ")"));
    }
  }
  // The message names the limit that binds, the smaller of the two.
  const int64_t total = static_cast<int64_t>(request.prompt.size()) + request.max_new_tokens;
  if (total > limits.max_seq_len && limits.max_seq_len <= limits.kv_capacity_slots) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt length (", request.prompt.size(), ") + max_new_tokens (", request.max_new_tokens,
        ") = ", total, " exceeds max_seq_len (", limits.max_seq_len, ")"));
  }
  if (total > limits.kv_capacity_slots) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt length (", request.prompt.size(), ") + max_new_tokens (", request.max_new_tokens,
        ") = ", total, " exceeds the KV cache capacity (", limits.kv_capacity_slots,
        " token slots); the request could never be scheduled"));
  }
  return absl::OkStatus();
}

}  // namespace int4kv
