// Generate over real gRPC on localhost against the real stories260K engine: tokens stream in
// order and as they are produced, the last message carries the finish reason and usage, and
// the tokens are exactly the engine's own output for the same request.
#include <algorithm>
#include <chrono>
#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/grpc_convert.h"
#include "server/testing/step_gate.h"
#include "tests/testing/generate_call.h"
#include "tests/testing/in_process_server.h"

namespace int4kv {
namespace {

using ::testing::ElementsAreArray;

const std::vector<int32_t> kPrompt = {1, 403, 261, 378, 5, 30, 271};

// What the engine itself produces for `proto` (bypassing gRPC).
GenerationResult EngineOutput(Engine& engine, const v1::GenerateRequest& proto) {
  absl::StatusOr<GenerateRequest> request = RequestFromProto(proto);
  EXPECT_TRUE(request.ok()) << request.status();
  absl::StatusOr<std::shared_ptr<RequestStream>> stream = engine.Submit(*request);
  EXPECT_TRUE(stream.ok()) << stream.status();
  return (*stream)->ReadAll();
}

TEST(GenerateStreamTest, TokensArriveInOrderAndIncrementallyThenFinishWithUsage) {
  StepGate gate;
  InProcessServer server(TestEngineConfig(), ServiceOptions(), gate.AttentionFactory());
  auto stub = server.NewStub();
  v1::GenerateRequest request = GreedyRequest(kPrompt, 300);
  request.set_request_id("stream-1");
  const GenerationResult expected = EngineOutput(server.engine(), request);
  ASSERT_EQ(expected.tokens.size(), 300u);

  // The engine is held in the attention of about its 20th step for this request (stories260K
  // runs one attention call a layer, 5 a step), so some tokens exist and most do not yet.
  const StepGate::Hold hold = gate.HoldAfter(5 * 20);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub->Generate(&context, request);
  ASSERT_TRUE(gate.WaitUntilHeld(absl::Seconds(30))) << "the request never reached its 20th step";
  // Incremental: tokens reach the client while the rest cannot have been generated yet.
  std::vector<v1::GenerateResponse> responses(1);
  ASSERT_TRUE(reader->Read(&responses[0]));
  EXPECT_GT(responses[0].token_ids_size(), 0);
  EXPECT_LT(responses[0].token_ids_size(), 30);
  EXPECT_EQ(responses[0].finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
  gate.Release();
  for (v1::GenerateResponse response; reader->Read(&response);) responses.push_back(response);
  const grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();

  // In order and complete: the concatenation is the engine's output, token for token.
  std::vector<int32_t> tokens;
  for (const v1::GenerateResponse& response : responses) {
    tokens.insert(tokens.end(), response.token_ids().begin(), response.token_ids().end());
  }
  EXPECT_THAT(tokens, ElementsAreArray(expected.tokens));
  // Many messages, every one but the last carrying tokens and nothing else.
  ASSERT_GE(responses.size(), 3u);
  for (size_t i = 0; i + 1 < responses.size(); ++i) {
    const v1::GenerateResponse& response = responses[i];
    EXPECT_GT(response.token_ids_size(), 0) << i;
    EXPECT_EQ(response.finish_reason(), v1::FINISH_REASON_UNSPECIFIED) << i;
    EXPECT_FALSE(response.has_usage()) << i;
    EXPECT_EQ(response.request_id(), "stream-1") << i;
  }

  // The last message: finish reason and usage.
  const v1::GenerateResponse& last = responses.back();
  const v1::Usage& usage = last.usage();
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(last.request_id(), "stream-1");
  EXPECT_EQ(usage.prompt_tokens(), static_cast<int32_t>(kPrompt.size()));
  EXPECT_EQ(usage.generated_tokens(), 300);
  EXPECT_GT(usage.time_to_first_token_us(), 0);
  EXPECT_GT(usage.total_time_us(), usage.time_to_first_token_us());
}

TEST(GenerateStreamTest, SampledRequestEqualsTheEnginesOutputForTheSameSeed) {
  InProcessServer server;
  auto stub = server.NewStub();
  v1::GenerateRequest request = GreedyRequest(kPrompt, 64);
  v1::SamplingParams* sampling = request.mutable_sampling();
  sampling->set_temperature(0.9f);
  sampling->set_top_k(40);
  sampling->set_top_p(0.95f);
  sampling->set_seed(20240601);
  const GenerationResult expected = EngineOutput(server.engine(), request);
  const GenerateCall call = RunGenerate(*stub, request);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  EXPECT_THAT(call.tokens, ElementsAreArray(expected.tokens));

  // A different seed samples a different sequence (so the seed did reach the sampler).
  sampling->set_seed(7);
  const GenerateCall other = RunGenerate(*stub, request);
  ASSERT_TRUE(other.status.ok());
  EXPECT_NE(other.tokens, call.tokens);
}

TEST(GenerateStreamTest, StopTokenEndsTheStreamWithReasonStop) {
  InProcessServer server;
  auto stub = server.NewStub();
  const GenerationResult greedy = EngineOutput(server.engine(), GreedyRequest(kPrompt, 40));
  ASSERT_EQ(greedy.tokens.size(), 40u);
  const int32_t stop = greedy.tokens[10];
  const size_t first =
      std::find(greedy.tokens.begin(), greedy.tokens.end(), stop) - greedy.tokens.begin();  // <= 10

  v1::GenerateRequest request = GreedyRequest(kPrompt, 40);
  request.mutable_sampling()->add_stop_token_ids(stop);
  const GenerateCall call = RunGenerate(*stub, request);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  const std::vector<int32_t> prefix(greedy.tokens.begin(), greedy.tokens.begin() + first + 1);
  EXPECT_THAT(call.tokens, ElementsAreArray(prefix));
  EXPECT_EQ(call.last().finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(call.last().usage().generated_tokens(), static_cast<int32_t>(prefix.size()));
}

TEST(GenerateStreamTest, EosEndsTheStreamUnlessIgnored) {
  InProcessServer server;
  auto stub = server.NewStub();
  // Greedy decoding of stories260K after {BOS, 5} ends its story after 106 tokens with BOS,
  // which is the EOS of llama2.c's models.
  v1::GenerateRequest request = GreedyRequest({1, 5}, 200);
  request.mutable_sampling()->set_ignore_eos(false);
  const GenerationResult expected = EngineOutput(server.engine(), request);
  ASSERT_EQ(expected.finish_reason, FinishReason::kEos);
  const GenerateCall call = RunGenerate(*stub, request);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  EXPECT_THAT(call.tokens, ElementsAreArray(expected.tokens));
  EXPECT_EQ(call.tokens.back(), server.engine().GetInfo().model.eos_token);
  EXPECT_EQ(call.tokens.back(), 1);
  EXPECT_EQ(call.last().finish_reason(), v1::FINISH_REASON_EOS);
  EXPECT_EQ(call.last().usage().generated_tokens(), static_cast<int32_t>(call.tokens.size()));

  request.mutable_sampling()->set_ignore_eos(true);
  const GenerateCall ignoring = RunGenerate(*stub, request);
  ASSERT_TRUE(ignoring.status.ok());
  EXPECT_EQ(ignoring.tokens.size(), 200u);
  EXPECT_EQ(ignoring.last().finish_reason(), v1::FINISH_REASON_LENGTH);
  const std::vector<int32_t> prefix(ignoring.tokens.begin(),
                                    ignoring.tokens.begin() + call.tokens.size());
  EXPECT_THAT(prefix, ElementsAreArray(call.tokens));
}

}  // namespace
}  // namespace int4kv
