#include "server/grpc_server.h"

#include <grpcpp/resource_quota.h>
#include <grpcpp/security/server_credentials.h>

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"

namespace int4kv {
namespace {

// Whether a plaintext server can listen on `address` (it stops at once). It serves a health
// service only because gRPC starts no server without one.
bool CanListen(const std::string& address) {
  HealthService health({});
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(&health);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) return false;
  server->Shutdown();
  return port != 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(
    const GrpcServerOptions& options, const std::vector<GrpcServiceEntry>& services) {
  const bool tls = !options.tls_cert_chain_pem.empty() || !options.tls_private_key_pem.empty();
  if (tls && (options.tls_cert_chain_pem.empty() || options.tls_private_key_pem.empty())) {
    return absl::InvalidArgumentError(
        "TLS needs both a certificate chain and a private key: one of them is empty");
  }
  if (services.empty()) {
    return absl::InvalidArgumentError("GrpcServer needs at least one service to serve");
  }
  if (options.max_threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_threads = ", options.max_threads, " is invalid: must be >= 0"));
  }
  std::shared_ptr<grpc::ServerCredentials> credentials;
  if (tls) {
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({options.tls_private_key_pem, options.tls_cert_chain_pem});
    credentials = grpc::SslServerCredentials(ssl);
  } else {
    credentials = grpc::InsecureServerCredentials();
  }

  std::vector<std::string> names;
  for (const GrpcServiceEntry& entry : services) names.push_back(entry.name);
  // NOT_SERVING before the server accepts its first call.
  auto health = std::make_unique<HealthService>(names);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.address, credentials, &port);
  // A second server on a taken port must fail, not share the port's traffic.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  if (options.max_threads > 0) {
    grpc::ResourceQuota quota("int4kv_server");
    quota.SetMaxThreads(options.max_threads);
    builder.SetResourceQuota(quota);
  }
  for (const GrpcServiceEntry& entry : services) builder.RegisterService(entry.service);
  builder.RegisterService(health.get());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    if (server != nullptr) server->Shutdown();
    // gRPC reports credentials it cannot load (a PEM that is not one, a key that is not the
    // certificate's) as a failure to listen. The address alone tells them apart: if it takes
    // a plaintext listener, what failed was the TLS pair.
    if (tls && CanListen(options.address)) {
      return absl::InvalidArgumentError(
          "gRPC refused the TLS certificate chain and private key (not a PEM certificate chain "
          "and a PEM key, or a key that is not the certificate's; gRPC logged the reason above)");
    }
    return absl::UnavailableError(
        absl::StrCat("could not listen on ", options.address,
                     " (address in use, not local, or malformed; gRPC logged the reason above)"));
  }
  return std::unique_ptr<GrpcServer>(
      new GrpcServer(std::move(health), std::move(server), port, tls));
}

GrpcServer::GrpcServer(std::unique_ptr<HealthService> health, std::unique_ptr<grpc::Server> server,
                       int port, bool tls)
    : health_(std::move(health)), server_(std::move(server)), port_(port), tls_(tls) {}

GrpcServer::~GrpcServer() { Shutdown(absl::ZeroDuration()); }

void GrpcServer::SetServing(bool serving) { health_->SetServing(serving); }

void GrpcServer::Shutdown(absl::Duration grace) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (shut_down_) return;
  shut_down_ = true;
  health_->Shutdown();  // else an open Watch stream would hold the server for all of `grace`
  server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(grace));
  server_->Wait();
}

}  // namespace int4kv
