// The service on a real in-process gRPC server and engine (stories260K): the starting state,
// a streamed generation against the engine's own output, a model failing mid-stream, the
// request id, and auth. The end-to-end suites in tests/ cover concurrency, cancellation,
// validation and the binary.
#include "server/service.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/engine.h"
#include "server/engine_device.h"
#include "server/engine_health.h"
#include "server/grpc_server.h"
#include "server/model_source.h"
#include "server/testing/health_check.h"
#include "server/testing/test_util.h"

namespace int4kv {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

std::unique_ptr<Engine> MakeEngine() {
  EngineConfig config;
  config.max_batch = 4;
  config.threads = 2;
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::CreateFromSource(config, kDefaultModelPath);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? std::move(*engine) : nullptr;
}

class ServiceTest : public ::testing::Test {
 protected:
  void StartServer(ServiceOptions options = {}) {
    service_ = std::make_unique<TokenGenerationService>(options);
    GrpcServerOptions server_options;
    server_options.address = "127.0.0.1:0";
    absl::StatusOr<std::unique_ptr<GrpcServer>> server = GrpcServer::Start(
        server_options, {{service_.get(), v1::TokenGeneration::service_full_name()}});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    stub_ = v1::TokenGeneration::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(server_->port()), grpc::InsecureChannelCredentials()));
  }

  void Attach() {
    engine_ = MakeEngine();
    ASSERT_NE(engine_, nullptr);
    ServerDetails details;
    details.version = "9.9.9";
    service_->AttachEngine(engine_.get(), details);
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(1));
    // Before server_ goes: an engine's failure handler may refer to it.
    if (engine_ != nullptr) engine_->Shutdown(absl::ZeroDuration());
  }

  // Reads a whole Generate stream.
  grpc::Status Generate(const v1::GenerateRequest& request,
                        std::vector<v1::GenerateResponse>* responses,
                        const std::string& token = "") {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    auto reader = stub_->Generate(&context, request);
    v1::GenerateResponse response;
    while (reader->Read(&response)) responses->push_back(response);
    return reader->Finish();
  }

  grpc::Status Info(v1::ServerInfo* info, const std::string& token = "") {
    grpc::ClientContext context;
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    return stub_->GetServerInfo(&context, v1::GetServerInfoRequest(), info);
  }

  std::unique_ptr<TokenGenerationService> service_;  // outlives server_ (declared first)
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<GrpcServer> server_;
  std::unique_ptr<v1::TokenGeneration::Stub> stub_;
};

v1::GenerateRequest Request(std::vector<int32_t> prompt, int32_t max_new_tokens) {
  v1::GenerateRequest request;
  for (int32_t id : prompt) request.add_prompt(id);
  request.set_max_new_tokens(max_new_tokens);
  request.mutable_sampling()->set_ignore_eos(true);
  return request;
}

TEST_F(ServiceTest, UnavailableUntilAnEngineIsAttached) {
  StartServer();
  std::vector<v1::GenerateResponse> responses;
  grpc::Status status = Generate(Request({1, 2}, 4), &responses);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("starting"));
  EXPECT_TRUE(responses.empty());
  v1::ServerInfo info;
  EXPECT_EQ(Info(&info).error_code(), grpc::StatusCode::UNAVAILABLE);

  Attach();
  ASSERT_TRUE(Info(&info).ok());
  EXPECT_EQ(info.version(), "9.9.9");
  EXPECT_EQ(info.backend().backend(), "cpu");
  EXPECT_EQ(info.backend().device_name(), CpuModelName());  // the engine's
  EXPECT_FALSE(info.backend().cuda_graphs());
  EXPECT_TRUE(info.backend().graph_buckets().empty());
  EXPECT_EQ(info.model().vocab_size(), 512);
  EXPECT_EQ(info.capacity().max_batch(), 4);
}

TEST_F(ServiceTest, StreamsTheEnginesTokensThenFinishAndUsage) {
  StartServer();
  Attach();
  v1::GenerateRequest request = Request({1, 403, 261, 378}, 40);
  request.set_request_id("abc-1");
  request.mutable_sampling()->set_temperature(0.8f);
  request.mutable_sampling()->set_top_k(50);
  request.mutable_sampling()->set_top_p(0.9f);
  request.mutable_sampling()->set_seed(1234);

  GenerateRequest direct = *RequestFromProto(request);
  const GenerationResult expected = (*engine_->Submit(direct))->ReadAll();
  ASSERT_EQ(expected.tokens.size(), 40u);

  std::vector<v1::GenerateResponse> responses;
  ASSERT_TRUE(Generate(request, &responses).ok());
  ASSERT_FALSE(responses.empty());
  std::vector<int32_t> tokens;
  for (size_t i = 0; i < responses.size(); ++i) {
    EXPECT_EQ(responses[i].request_id(), "abc-1");
    const bool last = i + 1 == responses.size();
    EXPECT_EQ(responses[i].finish_reason() != v1::FINISH_REASON_UNSPECIFIED, last) << i;
    EXPECT_EQ(responses[i].has_usage(), last) << i;
    if (!last) {
      EXPECT_GT(responses[i].token_ids_size(), 0) << i;
    }
    tokens.insert(tokens.end(), responses[i].token_ids().begin(), responses[i].token_ids().end());
  }
  EXPECT_THAT(tokens, ElementsAreArray(expected.tokens));
  const v1::GenerateResponse& last = responses.back();
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(last.usage().prompt_tokens(), 4);
  EXPECT_EQ(last.usage().generated_tokens(), 40);
  EXPECT_GT(last.usage().time_to_first_token_us(), 0);
  EXPECT_GE(last.usage().total_time_us(), last.usage().time_to_first_token_us());
}

// A model that fails mid-stream: the client gets the tokens produced before the failure,
// exactly those of a healthy engine, then INTERNAL carrying the engine's message.
TEST_F(ServiceTest, ModelFailureEndsTheStreamInternalAfterItsTokens) {
  StartServer();
  EngineConfig config;
  config.max_batch = 4;
  config.threads = 2;
  // stories260K has 5 layers: the 10th step's attention fails, after 9 tokens went out.
  // Owned by the callback, which the fixture's engine keeps past this function.
  auto attends = std::make_shared<std::atomic<int>>(0);
  const KvAttentionFactory failing_attention =
      FailingInt4AttentionFactory([attends] { return ++*attends > 5 * 9; });
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(config, Stories260K(), kDefaultModelPath, failing_attention);
  ASSERT_TRUE(engine.ok()) << engine.status();
  engine_ = std::move(*engine);
  service_->AttachEngine(engine_.get(), ServerDetails{});

  v1::GenerateRequest request = Request({1, 403, 261, 378}, 40);
  request.mutable_sampling()->set_temperature(0.0f);  // greedy: the same tokens every time
  std::vector<v1::GenerateResponse> responses;
  const grpc::Status status = Generate(request, &responses);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_THAT(status.error_message(), HasSubstr("injected attention failure"));
  std::vector<int32_t> tokens;
  for (const v1::GenerateResponse& response : responses) {
    EXPECT_EQ(response.finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
    EXPECT_FALSE(response.has_usage());
    tokens.insert(tokens.end(), response.token_ids().begin(), response.token_ids().end());
  }
  const std::unique_ptr<Engine> healthy = MakeEngine();
  const GenerationResult expected = (*healthy->Submit(*RequestFromProto(request)))->ReadAll();
  ASSERT_EQ(expected.tokens.size(), 40u);
  ASSERT_EQ(tokens.size(), 9u);
  EXPECT_THAT(tokens, ElementsAreArray(expected.tokens.begin(), expected.tokens.begin() + 9));
}

// A model that keeps failing: after kFailedStepsToStop failed requests the server's health
// turns NOT_SERVING (as int4kv_server wires it) and Generate answers UNAVAILABLE with why.
TEST_F(ServiceTest, RepeatedModelFailuresTurnHealthNotServing) {
  StartServer();
  EngineConfig config;
  config.max_batch = 4;
  config.threads = 2;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(
      config, Stories260K(), kDefaultModelPath, FailingInt4AttentionFactory([] { return true; }));
  ASSERT_TRUE(engine.ok()) << engine.status();
  engine_ = std::move(*engine);
  service_->AttachEngine(engine_.get(), ServerDetails{});
  server_->SetServing(true);
  StopServingOnEngineFailure(*engine_, *server_);
  const std::unique_ptr<grpc::health::v1::Health::Stub> health =
      grpc::health::v1::Health::NewStub(grpc::CreateChannel(
          "127.0.0.1:" + std::to_string(server_->port()), grpc::InsecureChannelCredentials()));
  using grpc::health::v1::HealthCheckResponse;
  HealthCheckResponse::ServingStatus serving = HealthCheckResponse::UNKNOWN;

  const v1::GenerateRequest request = Request({1, 403, 261, 378}, 8);
  for (int i = 0; i < kFailedStepsToStop; ++i) {
    ASSERT_TRUE(CheckHealth(*health, "", &serving).ok());
    EXPECT_EQ(serving, HealthCheckResponse::SERVING) << "before failure " << i + 1;
    std::vector<v1::GenerateResponse> responses;
    EXPECT_EQ(Generate(request, &responses).error_code(), grpc::StatusCode::INTERNAL);
  }
  ASSERT_TRUE(CheckHealth(*health, "", &serving).ok());
  EXPECT_EQ(serving, HealthCheckResponse::NOT_SERVING);
  ASSERT_TRUE(CheckHealth(*health, v1::TokenGeneration::service_full_name(), &serving).ok());
  EXPECT_EQ(serving, HealthCheckResponse::NOT_SERVING);
  std::vector<v1::GenerateResponse> responses;
  const grpc::Status status = Generate(request, &responses);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("stopped serving after 3 model steps in a row"));
  EXPECT_THAT(status.error_message(), HasSubstr("injected attention failure"));
  EXPECT_TRUE(responses.empty());
  v1::ServerInfo info;
  ASSERT_TRUE(Info(&info).ok());
  EXPECT_EQ(info.capacity().failure(), status.error_message());
  EXPECT_EQ(info.capacity().running(), 0);
  EXPECT_EQ(info.capacity().slots_free(), info.capacity().slots_total());
}

TEST_F(ServiceTest, BadRequestIdIsRejectedByName) {
  StartServer();
  Attach();
  v1::GenerateRequest request = Request({1}, 2);
  request.set_request_id(std::string(200, 'x'));
  std::vector<v1::GenerateResponse> responses;
  const grpc::Status status = Generate(request, &responses);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("request_id"));
  EXPECT_THAT(status.error_message(), HasSubstr("128"));
}

TEST_F(ServiceTest, BearerTokenGuardsBothMethods) {
  ServiceOptions options;
  options.auth_token = "tok-123";
  StartServer(options);
  Attach();
  std::vector<v1::GenerateResponse> responses;
  EXPECT_EQ(Generate(Request({1}, 2), &responses).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Generate(Request({1}, 2), &responses, "tok-12").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(responses.empty());
  v1::ServerInfo info;
  EXPECT_EQ(Info(&info).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Info(&info, "tok-123").ok());
  ASSERT_TRUE(Generate(Request({1}, 2), &responses, "tok-123").ok());
  EXPECT_EQ(responses.back().usage().generated_tokens(), 2);
}

}  // namespace
}  // namespace int4kv
