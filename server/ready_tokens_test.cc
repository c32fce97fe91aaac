// AppendReadyTokens on a stream the test fills itself: the per-response cap, the finish event
// and a stream that has nothing more yet.
#include "server/ready_tokens.h"

#include <vector>

#include "gtest/gtest.h"
#include "server/request_stream.h"

namespace int4kv {
namespace {

std::vector<int32_t> Tokens(const v1::GenerateResponse& response) {
  return {response.token_ids().begin(), response.token_ids().end()};
}

// The responses a reader that fell behind gets for `stream`, `max_tokens` at most each; the
// last one's finish is recorded in *finished.
std::vector<std::vector<int32_t>> ReadResponses(RequestStream& stream, int32_t max_tokens,
                                                bool* finished) {
  std::vector<std::vector<int32_t>> responses;
  StreamEvent event;
  *finished = false;
  while (!*finished && stream.Next(&event)) {
    v1::GenerateResponse response;
    *finished = AppendReadyTokens(stream, max_tokens, event, &response);
    responses.push_back(Tokens(response));
  }
  return responses;
}

TEST(ReadyTokensTest, AReaderThatFellBehindGetsTheTokensInCappedResponses) {
  RequestStream stream(1);
  for (int32_t token = 10; token < 17; ++token) stream.PushToken(token);
  stream.Finish(FinishReason::kLength, absl::OkStatus(), Usage());
  bool finished = false;
  const std::vector<std::vector<int32_t>> responses = ReadResponses(stream, 3, &finished);
  EXPECT_TRUE(finished);
  // Seven tokens at three a response; the finish rides with the last one.
  const std::vector<std::vector<int32_t>> expected = {{10, 11, 12}, {13, 14, 15}, {16}};
  EXPECT_EQ(responses, expected);
}

TEST(ReadyTokensTest, TheFinishRidesAloneWhenTheCapFilledTheLastResponse) {
  RequestStream stream(1);
  for (int32_t token = 0; token < 4; ++token) stream.PushToken(token);
  stream.Finish(FinishReason::kStop, absl::OkStatus(), Usage());
  bool finished = false;
  const std::vector<std::vector<int32_t>> responses = ReadResponses(stream, 2, &finished);
  EXPECT_TRUE(finished);
  const std::vector<std::vector<int32_t>> expected = {{0, 1}, {2, 3}, {}};
  EXPECT_EQ(responses, expected);
}

TEST(ReadyTokensTest, ACapOfOneSendsEveryTokenAlone) {
  RequestStream stream(1);
  for (int32_t token = 5; token < 8; ++token) stream.PushToken(token);
  stream.Finish(FinishReason::kLength, absl::OkStatus(), Usage());
  bool finished = false;
  const std::vector<std::vector<int32_t>> responses = ReadResponses(stream, 1, &finished);
  const std::vector<std::vector<int32_t>> expected = {{5}, {6}, {7}, {}};
  EXPECT_EQ(responses, expected);
}

// A stream with no finish yet: the response takes what is there and does not wait for more.
TEST(ReadyTokensTest, StopsAtTheLastTokenProducedSoFar) {
  RequestStream stream(1);
  stream.PushToken(1);
  stream.PushToken(2);
  StreamEvent event;
  ASSERT_TRUE(stream.Next(&event));
  v1::GenerateResponse response;
  EXPECT_FALSE(AppendReadyTokens(stream, 1024, event, &response));
  EXPECT_EQ(Tokens(response), (std::vector<int32_t>{1, 2}));
  EXPECT_FALSE(stream.done());
  stream.PushToken(3);
  stream.Finish(FinishReason::kLength, absl::OkStatus(), Usage());
  ASSERT_TRUE(stream.Next(&event));
  response.Clear();
  EXPECT_TRUE(AppendReadyTokens(stream, 1024, event, &response));
  EXPECT_EQ(Tokens(response), std::vector<int32_t>{3});
  EXPECT_EQ(event.type, StreamEvent::Type::kFinish);
  EXPECT_EQ(event.finish_reason, FinishReason::kLength);
}

}  // namespace
}  // namespace int4kv
