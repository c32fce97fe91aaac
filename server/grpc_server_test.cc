#include "server/grpc_server.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
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

// gRPC reads a TLS pair only when the port opens, and fails to listen when it cannot: on a
// free address that is the pair's fault (InvalidArgument), on a taken one the address's.
TEST(GrpcServerTest, ATlsPairGrpcCannotLoadIsInvalidWhereTheAddressIsFree) {
  GrpcServerOptions options = LocalOptions();
  options.tls_cert_chain_pem =
      "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n";
  options.tls_private_key_pem =
      "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n";
  v1::TokenGeneration::Service service;
  const absl::StatusOr<std::unique_ptr<GrpcServer>> refused =
      GrpcServer::Start(options, {{&service, kServiceName}});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("gRPC refused the TLS certificate chain"));

  v1::TokenGeneration::Service holder;
  absl::StatusOr<std::unique_ptr<GrpcServer>> first =
      GrpcServer::Start(LocalOptions(), {{&holder, kServiceName}});
  ASSERT_TRUE(first.ok()) << first.status();
  options.address = "127.0.0.1:" + std::to_string((*first)->port());
  v1::TokenGeneration::Service other;
  const absl::StatusOr<std::unique_ptr<GrpcServer>> taken =
      GrpcServer::Start(options, {{&other, kServiceName}});
  ASSERT_FALSE(taken.ok());
  EXPECT_EQ(taken.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(taken.status().message(), HasSubstr(options.address));
}

// Generate calls that each hold their handler's thread until `release` is notified.
class BlockingGenerateService final : public v1::TokenGeneration::Service {
 public:
  grpc::Status Generate(grpc::ServerContext*, const v1::GenerateRequest*,
                        grpc::ServerWriter<v1::GenerateResponse>*) override {
    entered.fetch_add(1);
    release.WaitForNotificationWithTimeout(absl::Seconds(30));
    return grpc::Status::OK;
  }
  std::atomic<int> entered{0};
  absl::Notification release;
};

TEST(GrpcServerTest, MaxThreadsRefusesCallsBeyondItWithResourceExhausted) {
  BlockingGenerateService service;
  GrpcServerOptions options = LocalOptions();
  options.max_threads = 4;
  absl::StatusOr<std::unique_ptr<GrpcServer>> server =
      GrpcServer::Start(options, {{&service, kServiceName}});
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string((*server)->port()),
                                     grpc::InsecureChannelCredentials());
  // One Generate call to its end, its status code into *code (admitted calls end once
  // `release` is notified); `finished` counts the calls that ended.
  std::atomic<int> finished{0};
  const auto call = [&channel, &finished](grpc::StatusCode* code) {
    auto stub = v1::TokenGeneration::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    v1::GenerateRequest request;
    v1::GenerateResponse response;
    auto reader = stub->Generate(&context, request);
    while (reader->Read(&response)) {
    }
    *code = reader->Finish().error_code();
    finished.fetch_add(1);
  };
  constexpr int kCalls = 16;
  std::vector<grpc::StatusCode> codes(kCalls, grpc::StatusCode::UNKNOWN);
  std::vector<std::thread> clients;
  for (int i = 0; i < kCalls; ++i) clients.emplace_back(call, &codes[i]);
  // The refused calls end at once; the admitted ones wait in the handler for the release. So
  // once every call has either entered the handler or ended, none is left to arrive (a server
  // that queued the calls beyond its threads instead would never get there: the loop gives up
  // after 20 s and the counts below fail).
  const absl::Time give_up = absl::Now() + absl::Seconds(20);
  while (service.entered.load() + finished.load() < kCalls && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  const int entered = service.entered.load();
  const int refused_before_release = finished.load();
  // Health runs on the callback API: it answers while every call thread is taken.
  HealthCheckResponse::ServingStatus health;
  const grpc::Status health_call = CheckHealth((*server)->port(), "", &health);
  service.release.Notify();
  for (std::thread& client : clients) client.join();

  int ok = 0, refused = 0;
  for (grpc::StatusCode code : codes) {
    EXPECT_TRUE(code == grpc::StatusCode::OK || code == grpc::StatusCode::RESOURCE_EXHAUSTED)
        << "status code " << code;
    ok += code == grpc::StatusCode::OK;
    refused += code == grpc::StatusCode::RESOURCE_EXHAUSTED;
  }
  EXPECT_TRUE(health_call.ok()) << health_call.error_message();
  EXPECT_GE(ok, 1);
  EXPECT_LT(entered, options.max_threads) << "handlers running at once";
  EXPECT_EQ(ok, service.entered.load()) << "every admitted call completed";
  EXPECT_EQ(refused, kCalls - ok);
  // Fewer handlers than threads run at once, so at least kCalls - max_threads calls were
  // refused, each before any admitted call was released.
  EXPECT_GE(refused, kCalls - options.max_threads);
  EXPECT_EQ(refused_before_release, refused);
  // Threads come back: a call after the others completes.
  grpc::StatusCode after = grpc::StatusCode::UNKNOWN;
  call(&after);
  EXPECT_EQ(after, grpc::StatusCode::OK);
}

TEST(GrpcServerTest, NeedsAService) {
  const absl::StatusOr<std::unique_ptr<GrpcServer>> server = GrpcServer::Start(LocalOptions(), {});
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(server.status().message(), HasSubstr("at least one service"));
}

}  // namespace
}  // namespace int4kv
