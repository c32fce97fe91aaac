#include "server/grpc_server.h"

#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/security/server_credentials.h>

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"

namespace int4kv {

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

  grpc::EnableDefaultHealthCheckService(true);
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
  std::vector<std::string> names;
  for (const GrpcServiceEntry& entry : services) {
    builder.RegisterService(entry.service);
    names.push_back(entry.name);
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    if (server != nullptr) server->Shutdown();
    return absl::UnavailableError(
        absl::StrCat("could not listen on ", options.address,
                     " (address in use, not local, or malformed; gRPC logged the reason above)"));
  }
  std::unique_ptr<GrpcServer> wrapped(new GrpcServer(std::move(server), port, tls, names));
  wrapped->SetServing(false);
  return wrapped;
}

GrpcServer::GrpcServer(std::unique_ptr<grpc::Server> server, int port, bool tls,
                       std::vector<std::string> names)
    : server_(std::move(server)), port_(port), tls_(tls), names_(std::move(names)) {}

GrpcServer::~GrpcServer() { Shutdown(absl::ZeroDuration()); }

void GrpcServer::SetServing(bool serving) {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus("", serving);
  for (const std::string& name : names_) health->SetServingStatus(name, serving);
}

void GrpcServer::Shutdown(absl::Duration grace) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (shut_down_) return;
  shut_down_ = true;
  SetServing(false);
  server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(grace));
  server_->Wait();
}

}  // namespace int4kv
