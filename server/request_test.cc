#include "server/request.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;

RequestLimits Limits() {
  RequestLimits limits;
  limits.vocab_size = 512;
  limits.max_new_tokens = 100;
  limits.max_seq_len = 128;
  limits.kv_capacity_slots = 120;
  return limits;
}

GenerateRequest Valid() {
  GenerateRequest r;
  r.prompt = {1, 2, 3};
  r.max_new_tokens = 10;
  return r;
}

void ExpectInvalid(const GenerateRequest& r, const std::string& part) {
  const absl::Status status = ValidateRequest(r, Limits());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << part;
  EXPECT_THAT(std::string(status.message()), HasSubstr(part));
}

TEST(ValidateRequestTest, AcceptsValid) { EXPECT_TRUE(ValidateRequest(Valid(), Limits()).ok()); }

TEST(ValidateRequestTest, NamesFieldAndRange) {
  GenerateRequest r = Valid();
  r.prompt.clear();
  ExpectInvalid(r, "prompt is empty");
  r = Valid();
  r.prompt[1] = 512;
  ExpectInvalid(r, "prompt[1] = 512 is invalid: token ids must be in [0, 512)");
  r.prompt[1] = -1;
  ExpectInvalid(r, "prompt[1] = -1");
  r = Valid();
  r.max_new_tokens = 0;
  ExpectInvalid(r, "max_new_tokens = 0 is invalid: must be in [1, 100]");
  r.max_new_tokens = 101;
  ExpectInvalid(r, "max_new_tokens = 101");
  r = Valid();
  r.sampling.temperature = -1;
  ExpectInvalid(r, "sampling.temperature = -1");
  r = Valid();
  r.sampling.top_p = 2;
  ExpectInvalid(r, "sampling.top_p = 2");
  r = Valid();
  r.sampling.top_k = -3;
  ExpectInvalid(r, "sampling.top_k = -3");
  r = Valid();
  r.stop_token_ids = {5, 600};
  ExpectInvalid(r, "sampling.stop_token_ids[1] = 600");
  r.stop_token_ids.assign(kMaxStopTokens + 1, 5);
  ExpectInvalid(r, "at most 64");
  r.stop_token_ids.assign(kMaxStopTokens, 5);
  EXPECT_TRUE(ValidateRequest(r, Limits()).ok());
  r.stop_token_ids = {3, -1};
  ExpectInvalid(r, "sampling.stop_token_ids[1] = -1");
  r.stop_token_ids = {0, 511};  // the vocabulary's ends
  EXPECT_TRUE(ValidateRequest(r, Limits()).ok());
}

// A request too long for the server is refused naming the limit that binds: the smaller of
// max_seq_len and the cache's slots.
TEST(ValidateRequestTest, NeverFits) {
  GenerateRequest r = Valid();
  r.prompt.assign(40, 1);
  r.max_new_tokens = 89;  // 129 > max_seq_len 128 > capacity 120
  ExpectInvalid(r,
                "prompt length (40) + max_new_tokens (89) = 129 exceeds the KV cache "
                "capacity (120 token slots)");
  r.max_new_tokens = 81;  // 121 <= 128 but > capacity 120
  ExpectInvalid(r, "= 121 exceeds the KV cache capacity (120 token slots)");
  r.max_new_tokens = 80;
  EXPECT_TRUE(ValidateRequest(r, Limits()).ok());
  RequestLimits roomy = Limits();
  roomy.kv_capacity_slots = 1000;
  r.max_new_tokens = 89;
  const absl::Status status = ValidateRequest(r, roomy);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "prompt length (40) + max_new_tokens (89) = 129 exceeds max_seq_len (128)");
  r.max_new_tokens = 88;  // exactly max_seq_len: fits
  EXPECT_TRUE(ValidateRequest(r, roomy).ok());
  // Equal limits: the message names max_seq_len, the limit the server advertises.
  RequestLimits equal = Limits();
  equal.kv_capacity_slots = equal.max_seq_len;
  r.max_new_tokens = 89;
  EXPECT_EQ(ValidateRequest(r, equal).message(),
            "prompt length (40) + max_new_tokens (89) = 129 exceeds max_seq_len (128)");
}

TEST(FinishReasonTest, Names) {
  EXPECT_EQ(FinishReasonName(FinishReason::kLength), "length");
  EXPECT_EQ(FinishReasonName(FinishReason::kStop), "stop");
  EXPECT_EQ(FinishReasonName(FinishReason::kEos), "eos");
  EXPECT_EQ(FinishReasonName(FinishReason::kCancelled), "cancelled");
  EXPECT_EQ(FinishReasonName(FinishReason::kError), "error");
}

}  // namespace
}  // namespace int4kv
