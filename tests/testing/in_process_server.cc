#include "tests/testing/in_process_server.h"

#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <cstdlib>

#include "server/model_source.h"

namespace int4kv {
namespace {

template <typename T>
T OrDie(absl::StatusOr<T> value, const char* what) {
  if (!value.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, value.status().ToString().c_str());
    std::abort();
  }
  return std::move(*value);
}

}  // namespace

EngineConfig TestEngineConfig() {
  EngineConfig config;
  config.max_batch = 8;
  config.max_queue = 64;
  config.threads = 2;
  return config;
}

InProcessServer::InProcessServer(const EngineConfig& config, const ServiceOptions& options)
    : engine_(OrDie(Engine::CreateFromSource(config, kDefaultModelPath), "Engine")),
      service_(std::make_unique<TokenGenerationService>(options)) {
  GrpcServerOptions server_options;
  server_options.address = "127.0.0.1:0";
  server_ = OrDie(GrpcServer::Start(server_options,
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
