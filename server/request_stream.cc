#include "server/request_stream.h"

#include "server/condition_wait.h"

namespace int4kv {

bool RequestStream::PopLocked(StreamEvent* event) {
  *event = std::move(events_.front());
  events_.pop_front();
  if (event->type == StreamEvent::Type::kFinish) done_ = true;
  return true;
}

bool RequestStream::Next(StreamEvent* event) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (done_) return false;
  ready_.wait(lock, [&] { return !events_.empty(); });
  return PopLocked(event);
}

bool RequestStream::NextFor(StreamEvent* event, absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (done_) return false;
  if (!WaitFor(ready_, lock, timeout, [&] { return !events_.empty(); })) return false;
  return PopLocked(event);
}

bool RequestStream::done() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return done_;
}

GenerationResult RequestStream::ReadAll() {
  GenerationResult result;
  StreamEvent event;
  while (Next(&event)) {
    if (event.type == StreamEvent::Type::kToken) {
      result.tokens.push_back(event.token);
    } else {
      result.finish_reason = event.finish_reason;
      result.status = event.status;
      result.usage = event.usage;
    }
  }
  return result;
}

void RequestStream::PushToken(int32_t token) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_) return;
    StreamEvent event;
    event.type = StreamEvent::Type::kToken;
    event.token = token;
    events_.push_back(std::move(event));
  }
  ready_.notify_all();
}

void RequestStream::Finish(FinishReason reason, const absl::Status& status, const Usage& usage) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_) return;
    finished_ = true;
    StreamEvent event;
    event.type = StreamEvent::Type::kFinish;
    event.finish_reason = reason;
    // A copy with a reference count of its own: the engine often finishes several streams
    // with one Status, and the readers then share nothing with each other or the engine.
    // (Abseil counts references in its shared library, out of ThreadSanitizer's sight.)
    event.status = status.ok() ? absl::OkStatus() : absl::Status(status.code(), status.message());
    event.usage = usage;
    events_.push_back(std::move(event));
  }
  ready_.notify_all();
}

bool RequestStream::finished() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return finished_;
}

}  // namespace int4kv
