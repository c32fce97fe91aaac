#include "tools/stream_call.h"

#include <chrono>
#include <utility>

#include "absl/time/clock.h"
#include "common/monotonic_time.h"

namespace int4kv {

void CallOutcome::AddTokenArrival(absl::Time at, int count) {
  if (!got_token) {
    got_token = true;
    time_to_first_token = at - start;
    // Tokens that came with the first one arrived with no gap after it.
    inter_token_ms.insert(inter_token_ms.end(), count - 1, 0.0);
  } else {
    const double share_ms = absl::ToDoubleMilliseconds(at - last_token_arrival) / count;
    inter_token_ms.insert(inter_token_ms.end(), count, share_ms);
  }
  last_token_arrival = at;
  tokens += count;
}

void CallOutcome::AddResponse(const v1::GenerateResponse& response, absl::Time at,
                              int32_t vocab_size) {
  const int k = response.token_ids_size();
  if (k > 0) {
    AddTokenArrival(at, k);
    for (int32_t id : response.token_ids()) {
      if (id < 0 || id >= vocab_size) ids_in_range = false;
    }
  }
  if (response.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
    finish_reason = response.finish_reason();
    usage_generated_tokens = response.usage().generated_tokens();
  }
}

void StreamCall::Start(v1::TokenGeneration::Stub* stub, v1::GenerateRequest request,
                       const StreamCallOptions& options, std::atomic<int64_t>* tokens_received,
                       absl::Time due, DoneCallback done) {
  StreamCall* call = new StreamCall(std::move(request), options, tokens_received, std::move(done));
  // absl::Time saturates, so an infinite deadline stays infinite (now() + inf would overflow).
  call->context_.set_deadline(absl::ToChronoTime(absl::Now() + options.deadline));
  if (!options.auth_token.empty()) {
    call->context_.AddMetadata("authorization", "Bearer " + options.auth_token);
  }
  call->outcome_.start = due;
  stub->async()->Generate(&call->context_, &call->request_, call);
  call->StartRead(&call->response_);
  call->StartCall();
}

StreamCall::StreamCall(v1::GenerateRequest request, const StreamCallOptions& options,
                       std::atomic<int64_t>* tokens_received, DoneCallback done)
    : request_(std::move(request)),
      vocab_size_(options.vocab_size),
      tokens_received_(tokens_received),
      done_(std::move(done)) {
  outcome_.max_new_tokens = request_.max_new_tokens();
  outcome_.ignore_eos = request_.sampling().ignore_eos();
}

void StreamCall::OnReadDone(bool ok) {
  if (!ok) return;  // the stream ended; OnDone follows
  outcome_.AddResponse(response_, MonotonicNow(), vocab_size_);
  tokens_received_->fetch_add(response_.token_ids_size(), std::memory_order_relaxed);
  StartRead(&response_);
}

void StreamCall::OnDone(const grpc::Status& status) {
  outcome_.end = MonotonicNow();
  outcome_.code = status.error_code();
  outcome_.message = status.error_message();
  // Nothing may touch this object after `done_` has it.
  done_(std::unique_ptr<StreamCall>(this));
}

}  // namespace int4kv
