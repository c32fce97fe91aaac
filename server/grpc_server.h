// A started gRPC server: one listening address (plaintext or TLS), the given services and the
// standard grpc.health.v1.Health service (HealthService). Health reports NOT_SERVING for the
// server ("") and for every named service from the first call until SetServing(true), and
// again from SetServing(false) or Shutdown on; Shutdown also ends every Watch stream.
//
// Server reflection is opt-in for the binary that wants it: it calls
// grpc::reflection::InitProtoReflectionServerBuilderPlugin() before Start (see
// proto/reflection.proto for why this library does not).
//
// Thread ownership: Start, SetServing and Shutdown may be called from any thread; gRPC runs
// the services on its own threads.
#ifndef INT4KV_SERVER_GRPC_SERVER_H_
#define INT4KV_SERVER_GRPC_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/health_service.h"

namespace int4kv {

struct GrpcServerOptions {
  // HOST:PORT to listen on; port 0 picks a free port (GrpcServer::port() says which).
  std::string address = "127.0.0.1:50051";
  // PEM server certificate chain and private key: both set for TLS, both empty for plaintext.
  std::string tls_cert_chain_pem;
  std::string tls_private_key_pem;
  // Most threads gRPC uses for calls; 0: gRPC's default (no limit). Calls beyond it fail with
  // RESOURCE_EXHAUSTED.
  int max_threads = 0;
};

struct GrpcServiceEntry {
  grpc::Service* service;  // not owned; outlives the server
  std::string name;        // fully qualified, for health ("int4kv.v1.TokenGeneration")
};

class GrpcServer {
 public:
  // Builds and starts the server. InvalidArgument for no services, a TLS half-configuration,
  // or a TLS pair gRPC refuses (not PEM, or a key that is not the certificate's);
  // Unavailable if the address cannot be bound (naming it).
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(
      const GrpcServerOptions& options, const std::vector<GrpcServiceEntry>& services);

  // Shutdown(absl::ZeroDuration()) if not shut down yet.
  ~GrpcServer();
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  int port() const { return port_; }
  bool tls() const { return tls_; }

  // Health status of the server and of every named service.
  void SetServing(bool serving);

  // Health NOT_SERVING and Watch streams ended, stops accepting calls, waits up to `grace` for
  // running calls to end, then cancels them. Idempotent.
  void Shutdown(absl::Duration grace);

 private:
  GrpcServer(std::unique_ptr<HealthService> health, std::unique_ptr<grpc::Server> server, int port,
             bool tls);

  // Declared before server_, so destroyed after it: the server serves it until then.
  const std::unique_ptr<HealthService> health_;
  std::unique_ptr<grpc::Server> server_;
  const int port_;
  const bool tls_;
  std::mutex mutex_;
  bool shut_down_ = false;  // guarded by mutex_
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_GRPC_SERVER_H_
