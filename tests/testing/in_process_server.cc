#include "tests/testing/in_process_server.h"

#include <grpcpp/grpcpp.h>

#include "server/model_source.h"
#include "server/testing/test_util.h"

namespace int4kv {

EngineConfig TestEngineConfig() {
  EngineConfig config;
  config.max_batch = 8;
  config.max_queue = 64;
  config.threads = 2;
  return config;
}

InProcessServer::InProcessServer(const EngineConfig& config, const ServiceOptions& options,
                                 const KvAttentionFactory& attention)
    : engine_(ValueOrDie(Engine::Create(config, Stories260K(), kDefaultModelPath, attention),
                         "Engine")),
      service_(std::make_unique<TokenGenerationService>(options)) {
  GrpcServerOptions server_options;
  server_options.address = "127.0.0.1:0";
  server_ =
      ValueOrDie(GrpcServer::Start(server_options,
                                   {{service_.get(), v1::TokenGeneration::service_full_name()}}),
                 "GrpcServer");
  ServerDetails details;
  details.version = "test";
  service_->AttachEngine(engine_.get(), details);
  server_->SetServing(true);
}

InProcessServer::~InProcessServer() {
  // Engine first: every open stream gets its finish, so no handler is left waiting.
  engine_->Shutdown(absl::ZeroDuration());
  server_->Shutdown(absl::Seconds(5));
}

std::string InProcessServer::address() const {
  return "127.0.0.1:" + std::to_string(server_->port());
}

std::unique_ptr<v1::TokenGeneration::Stub> InProcessServer::NewStub() const {
  return v1::TokenGeneration::NewStub(
      grpc::CreateChannel(address(), grpc::InsecureChannelCredentials()));
}

}  // namespace int4kv
