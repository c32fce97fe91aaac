#include "tests/reliability/hostile_requests.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace int4kv {
namespace {

const RequestRules kRules = {512, 512, 511, 4096};

v1::GenerateRequest Valid() {
  v1::GenerateRequest r;
  r.add_prompt(1);
  r.add_prompt(511);
  r.set_max_new_tokens(3);
  return r;
}

std::vector<std::string> Prefixes(const v1::GenerateRequest& r) {
  std::vector<std::string> prefixes;
  for (const Defect& d : FindDefects(r, kRules)) prefixes.push_back(d.prefix);
  return prefixes;
}

TEST(HostileRequestsTest, OracleFollowsTheDocumentedRules) {
  EXPECT_TRUE(Prefixes(Valid()).empty());
  using V = std::vector<std::string>;
  v1::GenerateRequest r = Valid();
  r.set_prompt(1, 512);
  EXPECT_EQ(Prefixes(r), V{"prompt["});
  r = Valid();
  r.set_max_new_tokens(0);
  EXPECT_EQ(Prefixes(r), V{"max_new_tokens = 0 is invalid"});
  r.set_max_new_tokens(511);  // 2 + 511 > 512
  EXPECT_EQ(Prefixes(r), V{"prompt length ("});
  r = Valid();
  r.mutable_sampling()->set_temperature(std::numeric_limits<float>::quiet_NaN());
  r.mutable_sampling()->set_top_p(0.0f);
  r.mutable_sampling()->set_top_k(-1);
  EXPECT_EQ(Prefixes(r), (V{"sampling.temperature = nan is invalid",
                            "sampling.top_p = 0 is invalid", "sampling.top_k = -1 is invalid"}));
  // A value just past a limit is quoted with the digits that tell it from the limit.
  r.mutable_sampling()->set_temperature(std::nextafter(100.0f, 200.0f));
  r.mutable_sampling()->set_top_p(std::nextafter(1.0f, 2.0f));
  r.mutable_sampling()->set_top_k(0);
  EXPECT_EQ(Prefixes(r), (V{"sampling.temperature = 100.00001 is invalid",
                            "sampling.top_p = 1.0000001 is invalid"}));
  r = Valid();
  r.mutable_sampling()->set_temperature(-0.0f);  // valid: -0 >= 0
  r.mutable_sampling()->set_top_p(1e-45f);       // valid: > 0
  EXPECT_TRUE(Prefixes(r).empty());
  r = Valid();
  r.set_request_id(std::string(129, 'x'));
  EXPECT_EQ(Prefixes(r), V{"request_id has"});
  r.set_request_id("a\x7f");
  EXPECT_EQ(Prefixes(r), V{"request_id byte"});
  r = Valid();
  r.clear_prompt();
  EXPECT_EQ(Prefixes(r), V{"prompt is empty"});
  for (int i = 0; i < 65; ++i) r.mutable_sampling()->add_stop_token_ids(3);
  r.mutable_sampling()->add_stop_token_ids(-1);
  EXPECT_EQ(Prefixes(r),
            (V{"prompt is empty", "sampling.stop_token_ids has", "sampling.stop_token_ids["}));
  const RequestRules small_kv = {512, 512, 511, 100};
  r = Valid();
  r.set_max_new_tokens(99);
  EXPECT_EQ(FindDefects(r, small_kv).size(), 1u);
  EXPECT_EQ(FindDefects(r, small_kv)[0].limit, "KV cache capacity (100");
}

TEST(HostileRequestsTest, Utf8Check) {
  EXPECT_TRUE(IsUtf8(""));
  EXPECT_TRUE(IsUtf8("plain ~ ascii\x01\x7f"));
  EXPECT_TRUE(IsUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsUtf8("\x80"));          // a lone continuation byte
  EXPECT_FALSE(IsUtf8("ab\xc3"));        // truncated
  EXPECT_FALSE(IsUtf8("\xc0\xaf"));      // overlong
  EXPECT_FALSE(IsUtf8("\xed\xa0\x80"));  // a surrogate
  EXPECT_FALSE(IsUtf8("\xff"));
}

TEST(HostileRequestsTest, GeneratorsProduceWhatTheySay) {
  HostileRequestGenerator generator(kRules, 1);
  int random_valid = 0;
  int long_valid = 0;
  for (int i = 0; i < 3000; ++i) {
    const HostileCase one = generator.OneDefect();
    EXPECT_FALSE(FindDefects(one.request, kRules).empty()) << one.kind;
    const HostileCase edge = generator.EdgeValid();
    EXPECT_TRUE(FindDefects(edge.request, kRules).empty()) << edge.kind;
    EXPECT_LE(edge.request.max_new_tokens(), 3);
    if (edge.request.prompt_size() == 511) ++long_valid;
    if (FindDefects(generator.AllRandom().request, kRules).empty()) ++random_valid;
  }
  EXPECT_GT(long_valid, 0);            // prompts right at max_seq_len
  EXPECT_GT(random_valid, 0);          // some all-random requests are valid...
  EXPECT_LT(random_valid, 3000 / 10);  // ...but few
}

TEST(HostileRequestsTest, SameSeedSameCases) {
  HostileRequestGenerator a(kRules, 9);
  HostileRequestGenerator b(kRules, 9);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(a.AllRandom().request.SerializeAsString(), b.AllRandom().request.SerializeAsString());
  }
}

}  // namespace
}  // namespace int4kv
