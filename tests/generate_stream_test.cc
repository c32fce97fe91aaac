// Generate over real gRPC on localhost against the real stories260K engine: tokens stream in
// order and as they are produced, the last message carries the finish reason and usage, and
// the tokens are exactly the engine's own output for the same request.
#include <algorithm>
#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/grpc_convert.h"
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
  InProcessServer server;
  auto stub = server.NewStub();
  v1::GenerateRequest request = GreedyRequest(kPrompt, 300);
  request.set_request_id("stream-1");
  const GenerationResult expected = EngineOutput(server.engine(), request);
  ASSERT_EQ(expected.tokens.size(), 300u);

  const GenerateCall call = RunGenerate(*stub, request);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  // In order and complete: the concatenation is the engine's output, token for token.
  EXPECT_THAT(call.tokens, ElementsAreArray(expected.tokens));

  // Incremental: many messages, every one but the last carrying tokens and nothing else.
  ASSERT_GE(call.responses.size(), 3u);
  for (size_t i = 0; i + 1 < call.responses.size(); ++i) {
    const v1::GenerateResponse& response = call.responses[i];
    EXPECT_GT(response.token_ids_size(), 0) << i;
    EXPECT_EQ(response.finish_reason(), v1::FINISH_REASON_UNSPECIFIED) << i;
    EXPECT_FALSE(response.has_usage()) << i;
    EXPECT_EQ(response.request_id(), "stream-1") << i;
  }
  // The first tokens reached the client while the rest were still being generated: the
  // client saw the stream spread over most of the server's generation time, not delivered at
  // the end.
  const v1::Usage& usage = call.last().usage();
  const double server_span_ms = (usage.total_time_us() - usage.time_to_first_token_us()) / 1e3;
  const double client_span_ms =
      absl::ToDoubleMilliseconds(call.arrivals.back() - call.arrivals.front());
  EXPECT_GT(server_span_ms, 0);
  EXPECT_GE(client_span_ms, 0.5 * server_span_ms)
      << "server generated for " << server_span_ms << " ms after the first token; the client "
      << "received everything within " << client_span_ms << " ms";

  // The last message: finish reason and usage.
  EXPECT_EQ(call.last().finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(call.last().request_id(), "stream-1");
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
  // Greedy decoding of stories260K after {BOS, 12} emits EOS (2) after 99 tokens.
  v1::GenerateRequest request = GreedyRequest({1, 12}, 200);
  request.mutable_sampling()->set_ignore_eos(false);
  const GenerationResult expected = EngineOutput(server.engine(), request);
  ASSERT_EQ(expected.finish_reason, FinishReason::kEos);
  const GenerateCall call = RunGenerate(*stub, request);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  EXPECT_THAT(call.tokens, ElementsAreArray(expected.tokens));
  EXPECT_EQ(call.tokens.back(), 2);
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
