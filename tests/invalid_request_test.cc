// Every invalid request gets INVALID_ARGUMENT with a message naming the field and its limit,
// and changes nothing: a generation running meanwhile produces exactly its tokens, and the
// server's counters are as they were.
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/grpc_convert.h"
#include "tests/testing/generate_call.h"
#include "tests/testing/in_process_server.h"

namespace int4kv {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// The server of this suite: max_seq_len 128, max_new_tokens limit 64 (stories260K: vocab 512).
EngineConfig LimitedConfig() {
  EngineConfig config = TestEngineConfig();
  config.max_seq_len = 128;
  config.max_new_tokens_limit = 64;
  return config;
}

struct InvalidCase {
  const char* name;
  std::function<void(v1::GenerateRequest*)> mutate;
  std::vector<std::string> message_parts;  // the field and the limit
};

std::vector<InvalidCase> InvalidCases() {
  return {
      {"empty prompt",
       [](v1::GenerateRequest* r) { r->clear_prompt(); },
       {"prompt is empty", "at least 1"}},
      {"token id = vocab",
       [](v1::GenerateRequest* r) { r->set_prompt(1, 512); },
       {"prompt[1] = 512", "[0, 512)"}},
      {"negative token id",
       [](v1::GenerateRequest* r) { r->set_prompt(0, -1); },
       {"prompt[0] = -1", "[0, 512)"}},
      {"max_new_tokens 0",
       [](v1::GenerateRequest* r) { r->set_max_new_tokens(0); },
       {"max_new_tokens = 0", "[1, 64]"}},
      {"max_new_tokens above the limit",
       [](v1::GenerateRequest* r) { r->set_max_new_tokens(65); },
       {"max_new_tokens = 65", "[1, 64]"}},
      {"prompt + max_new_tokens > max_seq_len",
       [](v1::GenerateRequest* r) {
         while (r->prompt_size() < 100) r->add_prompt(7);
         r->set_max_new_tokens(64);
       },
       {"max_new_tokens (64)", "exceeds max_seq_len (128)"}},
      {"negative temperature",
       [](v1::GenerateRequest* r) { r->mutable_sampling()->set_temperature(-0.5f); },
       {"sampling.temperature = -0.5", "[0, 100]"}},
      {"temperature above the limit",
       [](v1::GenerateRequest* r) { r->mutable_sampling()->set_temperature(101.0f); },
       {"sampling.temperature = 101", "[0, 100]"}},
      {"NaN temperature",
       [](v1::GenerateRequest* r) {
         r->mutable_sampling()->set_temperature(std::numeric_limits<float>::quiet_NaN());
       },
       {"sampling.temperature = nan", "[0, 100]"}},
      {"top_p 0",
       [](v1::GenerateRequest* r) { r->mutable_sampling()->set_top_p(0.0f); },
       {"sampling.top_p = 0", "(0, 1]"}},
      {"top_p above 1",
       [](v1::GenerateRequest* r) { r->mutable_sampling()->set_top_p(1.5f); },
       {"sampling.top_p = 1.5", "(0, 1]"}},
      {"negative top_k",
       [](v1::GenerateRequest* r) { r->mutable_sampling()->set_top_k(-1); },
       {"sampling.top_k = -1", ">= 0"}},
      {"stop id = vocab",
       [](v1::GenerateRequest* r) { r->mutable_sampling()->add_stop_token_ids(512); },
       {"sampling.stop_token_ids[0] = 512", "[0, 512)"}},
      {"too many stop ids",
       [](v1::GenerateRequest* r) {
         for (int i = 0; i < 65; ++i) r->mutable_sampling()->add_stop_token_ids(3);
       },
       {"sampling.stop_token_ids has 65 entries", "at most 64"}},
      {"request_id too long",
       [](v1::GenerateRequest* r) { r->set_request_id(std::string(129, 'r')); },
       {"request_id has 129 bytes", "at most 128"}},
  };
}

TEST(InvalidRequestTest, EachGetsInvalidArgumentNamingFieldAndLimitAndChangesNothing) {
  InProcessServer server(LimitedConfig());
  auto stub = server.NewStub();

  // A valid generation keeps running while the bad requests arrive.
  const v1::GenerateRequest valid = GreedyRequest({1, 403, 261, 378}, 64);
  const GenerationResult expected = (*server.engine().Submit(*RequestFromProto(valid)))->ReadAll();
  const v1::ServerInfo idle = WaitForIdle(*stub);
  GenerateCall concurrent;
  std::thread runner([&] { concurrent = RunGenerate(*server.NewStub(), valid); });

  for (const InvalidCase& c : InvalidCases()) {
    v1::GenerateRequest request = GreedyRequest({1, 403, 261}, 8);
    c.mutate(&request);
    const GenerateCall call = RunGenerate(*stub, request);
    EXPECT_EQ(call.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.name << ": " << call.status.error_message();
    for (const std::string& part : c.message_parts) {
      EXPECT_THAT(call.status.error_message(), HasSubstr(part)) << c.name;
    }
    EXPECT_TRUE(call.responses.empty()) << c.name;
  }
  runner.join();

  ASSERT_TRUE(concurrent.status.ok()) << concurrent.status.error_message();
  EXPECT_THAT(concurrent.tokens, ElementsAreArray(expected.tokens));
  EXPECT_EQ(concurrent.last().finish_reason(), v1::FINISH_REASON_LENGTH);

  // Nothing was queued, admitted or left reserved by the bad requests: once the valid request
  // is done the server is idle again, and only the valid request ran: 64 steps (its prompt
  // prefills in the step that samples its first token).
  const v1::ServerInfo after = WaitForIdle(*stub);
  EXPECT_EQ(after.capacity().slots_free(), idle.capacity().slots_free());
  EXPECT_LE(after.capacity().engine_steps() - idle.capacity().engine_steps(), 64);

  // On an idle server the bad requests run no step at all: a wrongly admitted one would.
  for (const InvalidCase& c : InvalidCases()) {
    v1::GenerateRequest request = GreedyRequest({1, 403, 261}, 8);
    c.mutate(&request);
    EXPECT_EQ(RunGenerate(*stub, request).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.name;
  }
  const v1::ServerInfo after_idle_rejections = WaitForIdle(*stub);
  EXPECT_EQ(after_idle_rejections.capacity().engine_steps(), after.capacity().engine_steps());
  EXPECT_EQ(after_idle_rejections.capacity().slots_free(), idle.capacity().slots_free());

  // And the next request is served normally.
  const GenerateCall next = RunGenerate(*stub, valid);
  ASSERT_TRUE(next.status.ok());
  EXPECT_THAT(next.tokens, ElementsAreArray(expected.tokens));
}

TEST(InvalidRequestTest, LimitsInTheMessagesAreTheServersAsReported) {
  InProcessServer server(LimitedConfig());
  auto stub = server.NewStub();
  const v1::ServerInfo info = GetInfo(*stub);
  EXPECT_EQ(info.model().vocab_size(), 512);
  EXPECT_EQ(info.capacity().max_seq_len(), 128);
  EXPECT_EQ(info.capacity().max_new_tokens(), 64);
  // The largest valid request passes.
  v1::GenerateRequest request = GreedyRequest({1}, 64);
  while (request.prompt_size() < 64) request.add_prompt(511);
  const GenerateCall call = RunGenerate(*stub, request);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  EXPECT_EQ(call.tokens.size(), 64u);
}

}  // namespace
}  // namespace int4kv
