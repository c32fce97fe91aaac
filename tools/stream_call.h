// One Generate call of the load generator, driven by gRPC's callback API, and what it saw:
// status, token arrival times and the final response.
//
// Thread ownership: gRPC runs a call's callbacks on its own threads, one at a time for one
// call. Start creates the call; OnDone, the last callback, hands the finished call to `done`
// (on a gRPC thread; keep it short), which takes ownership: the driver reads outcome() and
// deletes it on its own thread, so the call's last gRPC references are dropped there and not
// on a gRPC thread after the driver has moved on. `tokens_received`, shared by every call of
// a run, is incremented as tokens arrive (for live progress).
#ifndef INT4KV_TOOLS_STREAM_CALL_H_
#define INT4KV_TOOLS_STREAM_CALL_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "proto/generation.grpc.pb.h"

namespace int4kv {

struct CallOutcome {
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string message;  // the status message (empty on OK)
  // Times are MonotonicNow() readings (common/monotonic_time.h): only their differences mean
  // anything.
  absl::Time start;  // when the call was due: its arrival in an open loop, else its send
  absl::Time end;    // when its status arrived
  // From the start to the first response that carried a token; unset if none did.
  bool got_token = false;
  absl::Duration time_to_first_token;
  // Inter-token latency samples (ms), one for every token after the first: a later response
  // carrying k tokens, arriving g after the previous token-carrying response, adds k samples
  // of g / k; the first token-carrying response adds a sample of 0 for each token after its
  // first.
  std::vector<double> inter_token_ms;
  absl::Time last_token_arrival;                                   // of the last such response
  int64_t tokens = 0;                                              // token ids received
  bool ids_in_range = true;                                        // every id in [0, vocab_size)
  int32_t max_new_tokens = 0;                                      // of the request
  bool ignore_eos = false;                                         // of the request
  v1::FinishReason finish_reason = v1::FINISH_REASON_UNSPECIFIED;  // of the last response
  int32_t usage_generated_tokens = -1;                             // -1: no usage seen

  // Records a response carrying `count` > 0 tokens that arrived at `at`: the timing fields
  // above and `tokens`.
  void AddTokenArrival(absl::Time at, int count);
  // Records a whole response that arrived at `at`: its tokens (AddTokenArrival), whether each
  // id is in [0, vocab_size), and its finish reason and usage when it carries them.
  void AddResponse(const v1::GenerateResponse& response, absl::Time at, int32_t vocab_size);
};

struct StreamCallOptions {
  absl::Duration deadline = absl::Seconds(300);
  std::string auth_token;  // empty: no authorization header
  int32_t vocab_size = 0;  // for the id range check
};

class StreamCall final : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  using DoneCallback = std::function<void(std::unique_ptr<StreamCall>)>;

  // Starts the call; `stub` must outlive it. `done` runs exactly once. `due` (a MonotonicNow()
  // reading, not after now) is when the call should have started: its latencies count from
  // there, so that a sender running late does not hide the wait its lateness caused.
  static void Start(v1::TokenGeneration::Stub* stub, v1::GenerateRequest request,
                    const StreamCallOptions& options, std::atomic<int64_t>* tokens_received,
                    absl::Time due, DoneCallback done);

  // Complete once `done` has it.
  const CallOutcome& outcome() const { return outcome_; }

  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  StreamCall(v1::GenerateRequest request, const StreamCallOptions& options,
             std::atomic<int64_t>* tokens_received, DoneCallback done);

  grpc::ClientContext context_;
  const v1::GenerateRequest request_;
  const int32_t vocab_size_;
  std::atomic<int64_t>* const tokens_received_;
  const DoneCallback done_;
  v1::GenerateResponse response_;  // the read in progress
  CallOutcome outcome_;
};

}  // namespace int4kv

#endif  // INT4KV_TOOLS_STREAM_CALL_H_
