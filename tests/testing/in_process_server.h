// The gRPC server of int4kv_server, in the test's process: a real engine on stories260K, the
// TokenGenerationService and a GrpcServer on a free localhost port. Tests reach it only over
// gRPC, except for engine() (the engine's own output to compare with).
#ifndef INT4KV_TESTS_TESTING_IN_PROCESS_SERVER_H_
#define INT4KV_TESTS_TESTING_IN_PROCESS_SERVER_H_

#include <memory>
#include <string>

#include "proto/generation.grpc.pb.h"
#include "server/engine.h"
#include "server/engine_config.h"
#include "server/grpc_server.h"
#include "server/service.h"

namespace int4kv {

// batch 8, queue 64, 2 threads: the small CPU configuration of the suites.
EngineConfig TestEngineConfig();

class InProcessServer {
 public:
  // Aborts the test binary with the reason if the engine or the server does not start.
  // `attention`: the engine's KV attention (null: the INT4 attention, as the server's).
  explicit InProcessServer(const EngineConfig& config = TestEngineConfig(),
                           const ServiceOptions& options = ServiceOptions(),
                           const KvAttentionFactory& attention = nullptr);
  // Shuts the engine down (cancelling what still runs), then the server.
  ~InProcessServer();

  Engine& engine() { return *engine_; }
  GrpcServer& server() { return *server_; }
  TokenGenerationService& service() { return *service_; }
  std::string address() const;
  std::unique_ptr<v1::TokenGeneration::Stub> NewStub() const;

 private:
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<TokenGenerationService> service_;
  std::unique_ptr<GrpcServer> server_;
};

}  // namespace int4kv

#endif  // INT4KV_TESTS_TESTING_IN_PROCESS_SERVER_H_
