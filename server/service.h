// The int4kv.v1.TokenGeneration gRPC service. Thin: checks the bearer token, parses the request
// at the edge (grpc_convert.h), hands it to the Engine (which validates it and queues it) and
// streams the engine's events back. ToGrpcStatus (grpc_status.h) turns every absl::Status
// into the RPC's status.
//
// A client cancel or an expired deadline cancels the engine request (Engine::Cancel) within
// `cancel_poll_interval`, and the engine frees its KV slots within one step after that: one
// CancelWatcher thread asks every live call's ServerContext::IsCancelled each
// `cancel_poll_interval`, while the handlers block on their request streams. The same sweep
// ends a call whose client stops reading: a response Write blocked by the client's HTTP/2
// flow control for longer than `write_stall_limit` cancels the call (the client sees its
// stream reset) and the engine request, so the handler's thread returns.
//
// Thread ownership: gRPC runs Generate on its sync-server threads, any number at once; each
// call owns its RequestStream. GetServerInfo uses the callback API, so that a client that
// never reads its reply holds no thread. The service's only mutable state is the attached
// engine, published once by AttachEngine; until then (the server is loading the model) every
// RPC returns UNAVAILABLE. The engine is not owned and must outlive the gRPC server.
#ifndef INT4KV_SERVER_SERVICE_H_
#define INT4KV_SERVER_SERVICE_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "proto/generation.grpc.pb.h"
#include "server/cancel_watcher.h"
#include "server/engine.h"
#include "server/grpc_auth.h"
#include "server/grpc_convert.h"

namespace int4kv {

struct ServiceOptions {
  std::string auth_token;                                       // empty: no authentication
  absl::Duration cancel_poll_interval = absl::Milliseconds(5);  // CancelWatcher sweep period
  int32_t max_tokens_per_response = 1024;  // tokens already produced are sent together
  // How long one response Write may wait for the client to read before the call is ended;
  // InfiniteDuration: never. A multiple of cancel_poll_interval is what takes effect.
  absl::Duration write_stall_limit = absl::Seconds(60);
};

class TokenGenerationService final
    : public v1::TokenGeneration::WithCallbackMethod_GetServerInfo<v1::TokenGeneration::Service> {
 public:
  explicit TokenGenerationService(ServiceOptions options);
  ~TokenGenerationService() override;

  // Starts serving `engine`; call once. `details` completes GetServerInfo.
  void AttachEngine(Engine* engine, ServerDetails details);

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const v1::GetServerInfoRequest* request,
                                          v1::ServerInfo* response) override;

  // Accepted Generate calls whose handler has not returned yet, not counting those whose client
  // has already gone (the CancelWatcher stops watching them; nobody waits for their status).
  size_t generate_calls_in_flight() const { return cancel_watcher_.watched(); }

 private:
  struct Attached {
    Engine* engine;
    ServerDetails details;
  };

  // The attached engine, or Unavailable while the server is starting; Unauthenticated for a
  // call without the right token.
  absl::StatusOr<const Attached*> StartCall(const grpc::ServerContextBase& context) const;

  const ServiceOptions options_;
  const BearerTokenAuth auth_;
  std::atomic<const Attached*> attached_{nullptr};  // set once; owned (deleted at destruction)
  CancelWatcher cancel_watcher_;                    // the Generate calls in flight
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_SERVICE_H_
