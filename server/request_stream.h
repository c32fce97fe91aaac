// A request's output channel: the engine pushes tokens as they are produced and then exactly
// one finish event; the caller reads them in order. Unbounded (a request streams at most
// max_new_tokens + 1 events).
//
// Thread ownership: thread-safe. The engine's scheduler thread is the only producer (Push*,
// Finish); any one consumer thread reads (Next, NextFor, ReadAll). Shared by the engine and
// the caller through std::shared_ptr; either may drop it first.
#ifndef INT4KV_SERVER_REQUEST_STREAM_H_
#define INT4KV_SERVER_REQUEST_STREAM_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

#include "absl/time/time.h"
#include "server/request.h"

namespace int4kv {

// Everything a stream carried, collected.
struct GenerationResult {
  std::vector<int32_t> tokens;
  FinishReason finish_reason = FinishReason::kError;
  absl::Status status;
  Usage usage;
};

class RequestStream {
 public:
  explicit RequestStream(uint64_t id) : id_(id) {}
  RequestStream(const RequestStream&) = delete;
  RequestStream& operator=(const RequestStream&) = delete;

  // The engine's id of the request (for Engine::Cancel).
  uint64_t id() const { return id_; }

  // Consumer. Blocks until the next event; false once the finish event has been read.
  bool Next(StreamEvent* event);
  // As Next, waiting at most `timeout`; false on timeout too (then done() is false). An
  // infinite timeout waits as Next does.
  bool NextFor(StreamEvent* event, absl::Duration timeout);
  // True once the finish event has been read.
  bool done() const;
  // Reads every remaining event (blocking until the finish).
  GenerationResult ReadAll();

  // Producer (the engine). Events after Finish are dropped.
  void PushToken(int32_t token);
  void Finish(FinishReason reason, const absl::Status& status, const Usage& usage);
  bool finished() const;  // Finish has been called

 private:
  bool PopLocked(StreamEvent* event);

  const uint64_t id_;
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<StreamEvent> events_;  // guarded by mutex_
  bool finished_ = false;           // guarded by mutex_: Finish called
  bool done_ = false;               // guarded by mutex_: finish event read
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_REQUEST_STREAM_H_
