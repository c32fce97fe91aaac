#include "server/service.h"

#include <atomic>
#include <string>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/monotonic_time.h"
#include "server/grpc_status.h"
#include "server/ready_tokens.h"
#include "spdlog/spdlog.h"

namespace int4kv {

TokenGenerationService::TokenGenerationService(ServiceOptions options)
    : options_(std::move(options)),
      auth_(options_.auth_token),
      cancel_watcher_(options_.cancel_poll_interval) {}

TokenGenerationService::~TokenGenerationService() { delete attached_.load(); }

void TokenGenerationService::AttachEngine(Engine* engine, ServerDetails details) {
  const Attached* attached = new Attached{engine, std::move(details)};
  const Attached* previous = nullptr;
  if (!attached_.compare_exchange_strong(previous, attached)) {
    delete attached;
    spdlog::error("TokenGenerationService::AttachEngine called twice; keeping the first engine");
  }
}

absl::StatusOr<const TokenGenerationService::Attached*> TokenGenerationService::StartCall(
    const grpc::ServerContextBase& context) const {
  if (absl::Status s = auth_.Check(context.client_metadata()); !s.ok()) return s;
  const Attached* attached = attached_.load();
  if (attached == nullptr) {
    return absl::UnavailableError("the server is starting (loading the model); retry shortly");
  }
  return attached;
}

grpc::ServerUnaryReactor* TokenGenerationService::GetServerInfo(
    grpc::CallbackServerContext* context, const v1::GetServerInfoRequest* /*request*/,
    v1::ServerInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const absl::StatusOr<const Attached*> attached = StartCall(*context);
  if (!attached.ok()) {
    reactor->Finish(ToGrpcStatus(attached.status()));
    return reactor;
  }
  *response = ServerInfoToProto((*attached)->engine->GetInfo(), (*attached)->details);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::Status TokenGenerationService::Generate(grpc::ServerContext* context,
                                              const v1::GenerateRequest* request,
                                              grpc::ServerWriter<v1::GenerateResponse>* writer) {
  const absl::StatusOr<const Attached*> attached = StartCall(*context);
  if (!attached.ok()) return ToGrpcStatus(attached.status());
  Engine& engine = *(*attached)->engine;
  absl::StatusOr<GenerateRequest> parsed = RequestFromProto(*request);
  if (!parsed.ok()) return ToGrpcStatus(parsed.status());
  absl::StatusOr<std::shared_ptr<RequestStream>> submitted = engine.Submit(std::move(*parsed));
  if (!submitted.ok()) {
    spdlog::debug("request '{}' rejected: {}", request->request_id(),
                  submitted.status().ToString());
    return ToGrpcStatus(submitted.status());
  }
  RequestStream& stream = **submitted;
  spdlog::debug("request '{}' accepted as engine request {}", request->request_id(), stream.id());

  // Stops the engine request (its slots are freed within one step) when the client is gone.
  auto abandon = [&](const char* why) {
    engine.Cancel(stream.id()).IgnoreError();  // NotFound: it finished meanwhile
    spdlog::debug("request '{}' (engine {}) {}", request->request_id(), stream.id(), why);
    return ToGrpcStatus(absl::CancelledError(absl::StrCat("the request was ", why)));
  };
  // When the Write in progress began (MonotonicNow in nanoseconds); 0 while none is.
  std::atomic<int64_t> write_began_ns{0};
  auto write = [&](const v1::GenerateResponse& message) {
    write_began_ns = absl::ToUnixNanos(MonotonicNow());
    const bool written = writer->Write(message);
    write_began_ns = 0;
    return written;
  };
  auto write_stalled = [this, &write_began_ns] {
    const int64_t began = write_began_ns;
    return began != 0 && options_.write_stall_limit != absl::InfiniteDuration() &&
           MonotonicNow() - absl::FromUnixNanos(began) > options_.write_stall_limit;
  };
  // A client cancel or deadline, or a Write stalled past the limit, is seen by the watcher,
  // which cancels the engine request (the stream then finishes and wakes this thread) and the
  // call (a no-op for a call already cancelled; a blocked Write then returns false).
  std::atomic<bool> client_gone{false};
  std::atomic<bool> stalled_out{false};  // the watcher ended the call for a stalled Write
  const uint64_t watch = cancel_watcher_.Watch(
      [context, &write_stalled] { return context->IsCancelled() || write_stalled(); },
      [context, &engine, &client_gone, &stalled_out, &write_stalled, id = stream.id()] {
        stalled_out = !context->IsCancelled() && write_stalled();
        client_gone = true;
        engine.Cancel(id).IgnoreError();  // NotFound: it finished meanwhile
        context->TryCancel();
      });
  absl::Cleanup unwatch = [this, watch] { cancel_watcher_.Unwatch(watch); };

  v1::GenerateResponse response;
  StreamEvent event;
  while (stream.Next(&event)) {
    // Tokens already produced go out together, then the finish if it is there.
    response.Clear();
    response.set_request_id(request->request_id());
    if (!AppendReadyTokens(stream, options_.max_tokens_per_response, event, &response)) {
      // A Write fails once the call is cancelled: by the watcher for a stalled Write, or by
      // the client or its deadline (which may come before the watcher's sweep sees it).
      if (!write(response)) {
        return abandon(stalled_out ? "abandoned: the client stopped reading"
                                   : "cancelled by the client or its deadline");
      }
      continue;
    }
    const v1::FinishReason reason = FinishReasonToProto(event.finish_reason);
    if (reason == v1::FINISH_REASON_UNSPECIFIED && client_gone) {
      return abandon("cancelled by the client or its deadline");
    }
    if (reason == v1::FINISH_REASON_UNSPECIFIED) {
      // Cancelled or failed in the engine: the tokens so far, then the engine's status.
      if (response.token_ids_size() > 0) write(response);
      // Cancelled by the engine (a drain) or failed: worth a line at the default level.
      spdlog::warn("request '{}' (engine {}) ended: {}", request->request_id(), stream.id(),
                   event.status.ToString());
      return ToGrpcStatus(event.status.ok()
                              ? absl::InternalError(absl::StrCat(
                                    "the request ended as ", FinishReasonName(event.finish_reason)))
                              : event.status);
    }
    response.set_finish_reason(reason);
    UsageToProto(event.usage, response.mutable_usage());
    write(response);
    return grpc::Status::OK;
  }
  return ToGrpcStatus(absl::InternalError("the request's stream ended without a finish event"));
}

}  // namespace int4kv
