#include "server/health_service.h"

#include <utility>

namespace int4kv {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// One Watch stream. Every member is guarded by the service's mutex_, which the reactions
// take. StartWrite and Finish are called with it held: gRPC runs this reactor's reactions on
// its own threads, never inside those calls (write completions are not inlined, and a user
// reactor's OnCancel and OnDone are not inlineable).
class HealthService::WatchStream final : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  WatchStream(HealthService* service, std::string name)
      : service_(service), name_(std::move(name)) {}

  // Sends the service's current status for this stream's name unless it is what the client
  // last got; a change that arrives during a write is sent when the write is done. After the
  // service's Shutdown, finishes once the last status is out.
  void SendLocked() {
    if (finishing_) return;
    if (writing_) {
      pending_ = true;  // OnWriteDone sends the status current by then
      return;
    }
    const ServingStatus status = service_->StatusLocked(name_);
    if (status == last_sent_) {
      if (service_->shut_down_) FinishLocked(grpc::Status::OK);
      return;
    }
    response_.set_status(status);
    last_sent_ = status;
    writing_ = true;
    StartWrite(&response_);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(service_->mutex_);
    writing_ = false;
    if (!ok) {  // the stream is broken (the client went away)
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "health watch stream broken"));
      return;
    }
    const bool pending = std::exchange(pending_, false);
    if (pending || service_->shut_down_) SendLocked();
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(service_->mutex_);
    FinishLocked(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    {
      std::lock_guard<std::mutex> lock(service_->mutex_);
      service_->streams_.erase(this);
      if (service_->streams_.empty()) service_->streams_done_.notify_all();
    }
    delete this;
  }

 private:
  void FinishLocked(const grpc::Status& status) {
    if (finishing_) return;
    finishing_ = true;
    Finish(status);
  }

  HealthService* const service_;
  const std::string name_;
  HealthCheckResponse response_;  // the message being written
  // UNKNOWN until the first write: StatusLocked never returns it, so the first status is sent.
  ServingStatus last_sent_ = HealthCheckResponse::UNKNOWN;
  bool writing_ = false;
  bool pending_ = false;    // the status changed during a write
  bool finishing_ = false;  // Finish called
};

namespace {

std::set<std::string> WithServerName(const std::vector<std::string>& names) {
  std::set<std::string> all(names.begin(), names.end());
  all.insert("");
  return all;
}

}  // namespace

HealthService::HealthService(const std::vector<std::string>& names)
    : names_(WithServerName(names)) {}

HealthService::~HealthService() {
  std::unique_lock<std::mutex> lock(mutex_);
  streams_done_.wait(lock, [this] { return streams_.empty(); });
}

HealthService::ServingStatus HealthService::StatusLocked(const std::string& name) const {
  if (names_.count(name) == 0) return HealthCheckResponse::SERVICE_UNKNOWN;
  return serving_ ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
}

void HealthService::SetServing(bool serving) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (shut_down_ || serving_ == serving) return;
  serving_ = serving;
  for (WatchStream* stream : streams_) stream->SendLocked();
}

void HealthService::Shutdown() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (shut_down_) return;
  serving_ = false;
  shut_down_ = true;
  for (WatchStream* stream : streams_) stream->SendLocked();
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* context,
                                               const HealthCheckRequest* request,
                                               HealthCheckResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  ServingStatus status;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    status = StatusLocked(request->service());
  }
  if (status == HealthCheckResponse::SERVICE_UNKNOWN) {
    reactor->Finish(
        grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service '" + request->service() + "'"));
  } else {
    response->set_status(status);
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthService::Watch(
    grpc::CallbackServerContext* /*context*/, const HealthCheckRequest* request) {
  auto* stream = new WatchStream(this, request->service());
  std::lock_guard<std::mutex> lock(mutex_);
  streams_.insert(stream);
  stream->SendLocked();
  return stream;
}

}  // namespace int4kv
