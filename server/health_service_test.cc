#include "server/health_service.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "proto/health.grpc.pb.h"
#include "server/testing/health_check.h"

namespace int4kv {
namespace {

using ::grpc::health::v1::Health;
using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;

constexpr char kName[] = "int4kv.v1.TokenGeneration";

// A real server on 127.0.0.1 serving only a HealthService, and a client stub to it.
class HealthServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    health_ = std::make_unique<HealthService>(std::vector<std::string>{kName});
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(health_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    stub_ = Health::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                                grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    }
  }

  grpc::Status Check(const std::string& service, HealthCheckResponse::ServingStatus* status) {
    return CheckHealth(*stub_, service, status);
  }

  std::unique_ptr<grpc::ClientReader<HealthCheckResponse>> Watch(grpc::ClientContext* context,
                                                                 const std::string& service) {
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    HealthCheckRequest request;
    request.set_service(service);
    return stub_->Watch(context, request);
  }

  // Declared before server_, so destroyed after it.
  std::unique_ptr<HealthService> health_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Health::Stub> stub_;
};

// libgrpc++'s built-in service answers SERVING for "" until told otherwise; this one never
// says SERVING before SetServing(true).
TEST_F(HealthServiceTest, NotServingFromTheFirstCallUntilSetServing) {
  HealthCheckResponse::ServingStatus status;
  for (const std::string name : {"", kName}) {
    ASSERT_TRUE(Check(name, &status).ok());
    EXPECT_EQ(status, HealthCheckResponse::NOT_SERVING) << "'" << name << "'";
  }
  const grpc::Status unknown = Check("no.Such", &status);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(unknown.error_message(), "unknown service 'no.Such'");
  health_->SetServing(true);
  for (const std::string name : {"", kName}) {
    ASSERT_TRUE(Check(name, &status).ok());
    EXPECT_EQ(status, HealthCheckResponse::SERVING) << "'" << name << "'";
  }
  health_->SetServing(false);
  ASSERT_TRUE(Check(kName, &status).ok());
  EXPECT_EQ(status, HealthCheckResponse::NOT_SERVING);
}

TEST_F(HealthServiceTest, WatchSendsEveryChangeThenEndsAtShutdown) {
  grpc::ClientContext context;
  auto stream = Watch(&context, kName);
  HealthCheckResponse response;
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
  health_->SetServing(true);
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);
  health_->SetServing(true);  // no change, no message: the next one is NOT_SERVING
  health_->SetServing(false);
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
  health_->SetServing(true);
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);

  health_->Shutdown();
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
  EXPECT_FALSE(stream->Read(&response));
  const grpc::Status end = stream->Finish();
  EXPECT_TRUE(end.ok()) << end.error_message();

  health_->SetServing(true);  // ignored after Shutdown
  HealthCheckResponse::ServingStatus status;
  ASSERT_TRUE(Check("", &status).ok());
  EXPECT_EQ(status, HealthCheckResponse::NOT_SERVING);
}

TEST_F(HealthServiceTest, WatchOfAnUnknownServiceSaysSoOnceThenNothingUntilShutdown) {
  grpc::ClientContext context;
  auto stream = Watch(&context, "no.Such");
  HealthCheckResponse response;
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVICE_UNKNOWN);
  health_->SetServing(true);  // not its name: nothing for this stream
  health_->Shutdown();
  EXPECT_FALSE(stream->Read(&response)) << "got " << response.status();
  const grpc::Status end = stream->Finish();
  EXPECT_TRUE(end.ok()) << end.error_message();
}

// Streams of known and unknown names opened, cancelled or kept while another thread flips the
// status as fast as it can: each first message is right for its name, a cancelled stream ends
// CANCELLED, and at Shutdown every kept stream ends with OK, its last message NOT_SERVING
// (SERVICE_UNKNOWN, and nothing else, for an unknown name).
TEST_F(HealthServiceTest, StreamsComeAndGoWhileTheStatusFlips) {
  struct Kept {
    std::unique_ptr<grpc::ClientContext> context;
    std::unique_ptr<grpc::ClientReader<HealthCheckResponse>> stream;
    bool known;
    HealthCheckResponse::ServingStatus first;
  };
  std::mutex kept_mutex;
  std::vector<Kept> kept;  // guarded by kept_mutex
  std::atomic<bool> flipping{true};
  std::thread flipper([&] {
    for (bool serving = true; flipping; serving = !serving) {
      health_->SetServing(serving);
      std::this_thread::yield();
    }
  });
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < 25; ++i) {
        const bool known = (i + c) % 3 != 0;
        auto context = std::make_unique<grpc::ClientContext>();
        auto stream = Watch(context.get(), known ? kName : "no.Such");
        HealthCheckResponse response;
        ASSERT_TRUE(stream->Read(&response));
        if (known) {
          EXPECT_TRUE(response.status() == HealthCheckResponse::SERVING ||
                      response.status() == HealthCheckResponse::NOT_SERVING)
              << response.status();
        } else {
          EXPECT_EQ(response.status(), HealthCheckResponse::SERVICE_UNKNOWN);
        }
        if (i % 2 == 0) {
          context->TryCancel();
          while (stream->Read(&response)) {
          }
          EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
        } else {
          std::lock_guard<std::mutex> lock(kept_mutex);
          kept.push_back({std::move(context), std::move(stream), known, response.status()});
        }
      }
    });
  }
  for (std::thread& client : clients) client.join();
  flipping = false;
  flipper.join();

  health_->Shutdown();
  ASSERT_EQ(kept.size(), 48u);
  for (Kept& k : kept) {
    HealthCheckResponse::ServingStatus last = k.first;
    int more = 0;
    HealthCheckResponse response;
    while (k.stream->Read(&response)) {
      last = response.status();
      ++more;
    }
    if (k.known) {
      EXPECT_EQ(last, HealthCheckResponse::NOT_SERVING);
    } else {
      EXPECT_EQ(more, 0) << "an unknown name's stream got " << last;
    }
    const grpc::Status end = k.stream->Finish();
    EXPECT_TRUE(end.ok()) << end.error_message();
  }
}

TEST_F(HealthServiceTest, AWatchStartedAfterShutdownGetsNotServingAndEnds) {
  health_->SetServing(true);
  health_->Shutdown();
  health_->Shutdown();  // idempotent
  grpc::ClientContext context;
  auto stream = Watch(&context, "");
  HealthCheckResponse response;
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
  EXPECT_FALSE(stream->Read(&response));
  EXPECT_TRUE(stream->Finish().ok());
}

}  // namespace
}  // namespace int4kv
