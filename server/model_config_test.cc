#include "server/model_config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;

ModelConfig Stories() {
  ModelConfig c;
  c.dim = 64;
  c.hidden_dim = 172;
  c.num_layers = 5;
  c.q_heads = 8;
  c.kv_heads = 4;
  c.vocab_size = 512;
  c.max_seq_len = 512;
  return c;
}

TEST(ModelConfigTest, StoriesShape) {
  const ModelConfig c = Stories();
  ASSERT_TRUE(c.Validate().ok()) << c.Validate();
  EXPECT_EQ(c.head_dim(), 8);
  EXPECT_EQ(c.kv_dim(), 32);
  // The float count of stories260K.bin minus its RoPE tables (264128 - 4096).
  EXPECT_EQ(c.ParameterCount(), 260032);
  ModelConfig unshared = c;
  unshared.shared_classifier = false;
  EXPECT_EQ(unshared.ParameterCount(), 260032 + 512 * 64);
}

void ExpectInvalid(const ModelConfig& c, const std::string& field) {
  const absl::Status status = c.Validate();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << field;
  EXPECT_THAT(std::string(status.message()), HasSubstr(field));
}

TEST(ModelConfigTest, RejectsBadFieldsByName) {
  ModelConfig c = Stories();
  c.dim = 0;
  ExpectInvalid(c, "ModelConfig.dim = 0");
  c = Stories();
  c.num_layers = -1;
  ExpectInvalid(c, "num_layers = -1");
  c = Stories();
  c.q_heads = 7;
  ExpectInvalid(c, "multiple of q_heads (7)");
  c = Stories();
  c.kv_heads = 3;
  ExpectInvalid(c, "multiple of kv_heads (3)");
  c = Stories();
  c.dim = 24;  // head_dim 3
  ExpectInvalid(c, "head_dim");
  c = Stories();
  c.vocab_size = kMaxModelVocab + 1;
  ExpectInvalid(c, "vocab_size");
  c = Stories();
  c.norm_eps = 0.0f;
  ExpectInvalid(c, "norm_eps");
  c = Stories();
  c.rope_theta = NAN;
  ExpectInvalid(c, "rope_theta");
  c = Stories();
  c.eos_token = 512;
  ExpectInvalid(c, "eos_token = 512");
  c = Stories();
  c.bos_token = 512;
  ExpectInvalid(c, "bos_token = 512");
  c.bos_token = 511;  // the vocabulary's last id
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
  c = Stories();
  c.rope_theta = 0.5f;
  ExpectInvalid(c, "rope_theta");
}

}  // namespace
}  // namespace int4kv
