// What a caller submits to the engine and what comes back on the request's stream, with the
// submit-time validation. Native types only; the gRPC layer parses into these at the edge.
#ifndef INT4KV_SERVER_REQUEST_H_
#define INT4KV_SERVER_REQUEST_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/sampler.h"

namespace int4kv {

constexpr int32_t kMaxStopTokens = 64;

struct GenerateRequest {
  std::vector<int32_t> prompt;  // token ids, each in [0, vocab); not empty
  int32_t max_new_tokens = 16;  // in [1, the engine's max_new_tokens limit]
  SamplingParams sampling;
  // Generation stops after emitting any of these (finish reason kStop); at most
  // kMaxStopTokens ids, each in [0, vocab).
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;  // false: stop after emitting the model's EOS (finish reason kEos)
};

enum class FinishReason : int32_t {
  kLength = 0,     // max_new_tokens generated
  kStop = 1,       // a stop token was generated (it is the last token streamed)
  kEos = 2,        // EOS was generated (it is the last token streamed)
  kCancelled = 3,  // Cancel(), or the engine shut down before the request finished
  kError = 4,      // the model failed; the final event's status says why
};

absl::string_view FinishReasonName(FinishReason reason);  // "length", "stop", ...

struct Usage {
  int32_t prompt_tokens = 0;
  int32_t generated_tokens = 0;                               // tokens streamed
  absl::Duration time_to_first_token = absl::ZeroDuration();  // submit -> first token; 0 if none
  absl::Duration total_time = absl::ZeroDuration();           // submit -> finish
};

// One message on a request's stream: a generated token, or (last) the finish.
struct StreamEvent {
  enum class Type { kToken, kFinish };
  Type type = Type::kToken;
  int32_t token = -1;  // kToken
  // kFinish: why it ended; status is OK for length, stop and eos, Cancelled for Cancel(),
  // Unavailable for a shutdown, the model's error for kError.
  FinishReason finish_reason = FinishReason::kLength;
  absl::Status status;
  Usage usage;
};

// The engine's limits that a request is checked against at submit.
struct RequestLimits {
  int32_t vocab_size = 0;
  int32_t max_new_tokens = 0;     // largest max_new_tokens accepted
  int32_t max_seq_len = 0;        // prompt + max_new_tokens must not exceed it
  int64_t kv_capacity_slots = 0;  // nor the KV cache's capacity

  // The longest request (prompt + max_new_tokens) that can ever be served.
  int64_t longest() const { return std::min<int64_t>(max_seq_len, kv_capacity_slots); }
};

// OK, or InvalidArgument naming the field and the allowed range: empty prompt, a token or stop
// id outside [0, vocab), max_new_tokens outside [1, limit], bad sampling values, or a request
// that can never fit (prompt + max_new_tokens above max_seq_len or the KV capacity).
absl::Status ValidateRequest(const GenerateRequest& request, const RequestLimits& limits);

}  // namespace int4kv

#endif  // INT4KV_SERVER_REQUEST_H_
