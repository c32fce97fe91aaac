#include "server/grpc_server.h"

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/generation.grpc.pb.h"
#include "proto/health.grpc.pb.h"
#include "server/testing/health_check.h"

namespace int4kv {
namespace {

using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;

constexpr char kServiceName[] = "int4kv.v1.TokenGeneration";

// The health status of `service` on a plaintext server at 127.0.0.1:port, or the RPC error.
grpc::Status CheckHealth(int port, const std::string& service,
                         HealthCheckResponse::ServingStatus* status) {
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  return ::int4kv::CheckHealth(*stub, service, status);
}

GrpcServerOptions LocalOptions() {
  GrpcServerOptions options;
  options.address = "127.0.0.1:0";
  return options;
}

TEST(GrpcServerTest, PicksAFreePortAndHealthFollowsSetServing) {
  v1::TokenGeneration::Service service;  // every method UNIMPLEMENTED; health is what counts
  absl::StatusOr<std::unique_ptr<GrpcServer>> server =
      GrpcServer::Start(LocalOptions(), {{&service, kServiceName}});
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  EXPECT_GT(port, 0);
  EXPECT_FALSE((*server)->tls());

  HealthCheckResponse::ServingStatus status;
  for (const std::string name : {"", kServiceName}) {
    ASSERT_TRUE(CheckHealth(port, name, &status).ok());
    EXPECT_EQ(status, HealthCheckResponse::NOT_SERVING) << "'" << name << "' before SetServing";
  }
  (*server)->SetServing(true);
  for (const std::string name : {"", kServiceName}) {
    ASSERT_TRUE(CheckHealth(port, name, &status).ok());
    EXPECT_EQ(status, HealthCheckResponse::SERVING) << "'" << name << "'";
  }
  EXPECT_EQ(CheckHealth(port, "no.Such", &status).error_code(), grpc::StatusCode::NOT_FOUND);
  (*server)->SetServing(false);
  ASSERT_TRUE(CheckHealth(port, kServiceName, &status).ok());
  EXPECT_EQ(status, HealthCheckResponse::NOT_SERVING);

  (*server)->Shutdown(absl::Seconds(1));
  (*server)->Shutdown(absl::Seconds(1));  // idempotent
  EXPECT_EQ(CheckHealth(port, "", &status).error_code(), grpc::StatusCode::UNAVAILABLE);
}

// An open Watch stream ends at Shutdown with the last status, instead of holding the server
// for the whole grace period as a running call would.
TEST(GrpcServerTest, ShutdownEndsWatchStreamsWithoutWaitingOutTheGrace) {
  v1::TokenGeneration::Service service;
  absl::StatusOr<std::unique_ptr<GrpcServer>> server =
      GrpcServer::Start(LocalOptions(), {{&service, kServiceName}});
  ASSERT_TRUE(server.ok()) << server.status();
  (*server)->SetServing(true);
  auto stub = grpc::health::v1::Health::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string((*server)->port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  HealthCheckRequest request;
  request.set_service(kServiceName);
  auto stream = stub->Watch(&context, request);
  HealthCheckResponse response;
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);

  const absl::Time start = absl::Now();
  (*server)->Shutdown(absl::Seconds(20));  // a regression waits all of it: a failure, not a timeout
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
  EXPECT_FALSE(stream->Read(&response));
  EXPECT_TRUE(stream->Finish().ok());
}

TEST(GrpcServerTest, ATakenPortIsAnErrorNamingTheAddress) {
  v1::TokenGeneration::Service service;
  absl::StatusOr<std::unique_ptr<GrpcServer>> first =
      GrpcServer::Start(LocalOptions(), {{&service, kServiceName}});
  ASSERT_TRUE(first.ok()) << first.status();
  GrpcServerOptions options;
  options.address = "127.0.0.1:" + std::to_string((*first)->port());
  v1::TokenGeneration::Service other;
  const absl::StatusOr<std::unique_ptr<GrpcServer>> second =
      GrpcServer::Start(options, {{&other, kServiceName}});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr(options.address));
}

TEST(GrpcServerTest, HalfATlsConfigurationIsInvalid) {
  GrpcServerOptions options = LocalOptions();
  options.tls_cert_chain_pem = "-----BEGIN CERTIFICATE-----";
  absl::StatusOr<std::unique_ptr<GrpcServer>> server = GrpcServer::Start(options, {});
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(server.status().message(), HasSubstr("both a certificate chain and a private key"));
  options = LocalOptions();
  options.max_threads = -1;
  v1::TokenGeneration::Service service;
  server = GrpcServer::Start(options, {{&service, kServiceName}});
  EXPECT_THAT(server.status().message(), HasSubstr("max_threads = -1"));
}

TEST(GrpcServerTest, NeedsAService) {
  const absl::StatusOr<std::unique_ptr<GrpcServer>> server = GrpcServer::Start(LocalOptions(), {});
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(server.status().message(), HasSubstr("at least one service"));
}

}  // namespace
}  // namespace int4kv
