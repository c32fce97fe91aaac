#include "server/grpc_convert.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(RequestFromProtoTest, UnsetFieldsTakeTheDocumentedDefaults) {
  v1::GenerateRequest proto;
  proto.add_prompt(1);
  proto.add_prompt(42);
  proto.set_max_new_tokens(7);
  const absl::StatusOr<GenerateRequest> request = RequestFromProto(proto);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_THAT(request->prompt, ElementsAre(1, 42));
  EXPECT_EQ(request->max_new_tokens, 7);
  EXPECT_EQ(request->sampling.temperature, 0.0f);
  EXPECT_EQ(request->sampling.top_k, 0);
  EXPECT_EQ(request->sampling.top_p, 1.0f);  // unset top_p is 1, not the proto's 0
  EXPECT_FALSE(request->sampling.seed.has_value());
  EXPECT_TRUE(request->stop_token_ids.empty());
  EXPECT_FALSE(request->ignore_eos);
}

TEST(RequestFromProtoTest, CopiesEverySetField) {
  v1::GenerateRequest proto;
  proto.add_prompt(5);
  proto.set_max_new_tokens(3);
  proto.set_request_id("client-7");
  v1::SamplingParams* sampling = proto.mutable_sampling();
  sampling->set_temperature(0.5f);
  sampling->set_top_k(40);
  sampling->set_top_p(0.25f);
  sampling->set_seed(0);  // an explicit 0 is a seed, not "unset"
  sampling->add_stop_token_ids(9);
  sampling->add_stop_token_ids(11);
  sampling->set_ignore_eos(true);
  const absl::StatusOr<GenerateRequest> request = RequestFromProto(proto);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->sampling.temperature, 0.5f);
  EXPECT_EQ(request->sampling.top_k, 40);
  EXPECT_EQ(request->sampling.top_p, 0.25f);
  ASSERT_TRUE(request->sampling.seed.has_value());
  EXPECT_EQ(*request->sampling.seed, 0u);
  EXPECT_THAT(request->stop_token_ids, ElementsAre(9, 11));
  EXPECT_TRUE(request->ignore_eos);
}

TEST(RequestFromProtoTest, ExplicitZeroTopPIsPassedOnForTheEngineToReject) {
  v1::GenerateRequest proto;
  proto.mutable_sampling()->set_top_p(0.0f);
  const absl::StatusOr<GenerateRequest> request = RequestFromProto(proto);
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(request->sampling.top_p, 0.0f);
}

TEST(ValidateRequestIdTest, AcceptsPrintableUpToTheLimit) {
  EXPECT_TRUE(ValidateRequestId("").ok());
  EXPECT_TRUE(ValidateRequestId(std::string(kMaxRequestIdBytes, '~')).ok());
  std::string every_printable;  // 32 (space) to 126 ('~')
  for (char c = ' '; c <= '~'; ++c) every_printable.push_back(c);
  EXPECT_TRUE(ValidateRequestId(every_printable).ok());
}

TEST(ValidateRequestIdTest, RejectsTooLongNamingFieldAndLimit) {
  const absl::Status status = ValidateRequestId(std::string(kMaxRequestIdBytes + 1, 'a'));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("request_id"));
  EXPECT_THAT(status.message(), HasSubstr("129 bytes"));
  EXPECT_THAT(status.message(), HasSubstr("at most 128"));
}

TEST(ValidateRequestIdTest, RejectsControlAndNonAsciiBytes) {
  EXPECT_THAT(ValidateRequestId("a\nb").message(), HasSubstr("request_id byte 1 = 10"));
  EXPECT_EQ(ValidateRequestId("caf\xc3\xa9").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ValidateRequestId("a\x1f").message(), HasSubstr("request_id byte 1 = 31"));
  EXPECT_THAT(ValidateRequestId("a\x7f").message(), HasSubstr("request_id byte 1 = 127"));
  v1::GenerateRequest proto;
  proto.set_request_id("bad\x01");
  EXPECT_EQ(RequestFromProto(proto).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(FinishReasonToProtoTest, MapsNormalReasonsOnly) {
  EXPECT_EQ(FinishReasonToProto(FinishReason::kLength), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(FinishReasonToProto(FinishReason::kStop), v1::FINISH_REASON_STOP);
  EXPECT_EQ(FinishReasonToProto(FinishReason::kEos), v1::FINISH_REASON_EOS);
  EXPECT_EQ(FinishReasonToProto(FinishReason::kCancelled), v1::FINISH_REASON_UNSPECIFIED);
  EXPECT_EQ(FinishReasonToProto(FinishReason::kError), v1::FINISH_REASON_UNSPECIFIED);
}

TEST(UsageToProtoTest, TimesInMicroseconds) {
  Usage usage;
  usage.prompt_tokens = 4;
  usage.generated_tokens = 9;
  usage.time_to_first_token = absl::Microseconds(1500);
  usage.total_time = absl::Milliseconds(12);
  v1::Usage proto;
  UsageToProto(usage, &proto);
  EXPECT_EQ(proto.prompt_tokens(), 4);
  EXPECT_EQ(proto.generated_tokens(), 9);
  EXPECT_EQ(proto.time_to_first_token_us(), 1500);
  EXPECT_EQ(proto.total_time_us(), 12000);
}

TEST(ServerInfoToProtoTest, CopiesEveryField) {
  EngineInfo info;
  info.device = "cuda";
  info.model_source = "testdata/models/stories260K.bin";
  info.model.dim = 64;
  info.model.hidden_dim = 172;
  info.model.num_layers = 5;
  info.model.q_heads = 8;
  info.model.kv_heads = 4;
  info.model.vocab_size = 512;
  info.model.max_seq_len = 512;
  info.model.bos_token = 1;
  info.model.eos_token = 2;
  info.attention = "int4";
  info.max_batch = 8;
  info.max_queue = 64;
  info.max_seq_len = 256;
  info.max_new_tokens_limit = 255;
  info.max_step_tokens = 256;
  info.slots_total = 2048;
  info.slots_free = 2000;
  info.group_size = 16;
  info.quant_mode = QuantMode::kAsymmetric;
  info.param_dtype = ParamDtype::kBFloat16;
  info.kv_bytes_per_token = 280;
  info.kv_pool_bytes = 280 * 2049;
  info.running = 2;
  info.queued = 3;
  info.steps = 77;
  info.draining = true;
  info.failure = "the engine stopped serving";
  info.device_name = "Some GPU";
  info.cuda_graphs = true;
  info.graph_buckets = {1, 2, 4};
  ServerDetails details;
  details.version = "1.2.3";

  const v1::ServerInfo proto = ServerInfoToProto(info, details);
  EXPECT_EQ(proto.version(), "1.2.3");
  EXPECT_EQ(proto.model().source(), "testdata/models/stories260K.bin");
  EXPECT_EQ(proto.model().vocab_size(), 512);
  EXPECT_EQ(proto.model().dim(), 64);
  EXPECT_EQ(proto.model().hidden_dim(), 172);
  EXPECT_EQ(proto.model().num_layers(), 5);
  EXPECT_EQ(proto.model().q_heads(), 8);
  EXPECT_EQ(proto.model().kv_heads(), 4);
  EXPECT_EQ(proto.model().head_dim(), 8);
  EXPECT_EQ(proto.model().max_seq_len(), 512);
  EXPECT_EQ(proto.model().bos_token(), 1);
  EXPECT_EQ(proto.model().eos_token(), 2);
  EXPECT_EQ(proto.kv_cache().attention(), "int4");
  EXPECT_EQ(proto.kv_cache().group_size(), 16);
  EXPECT_EQ(proto.kv_cache().mode(), v1::KV_QUANT_MODE_ASYMMETRIC);
  EXPECT_EQ(proto.kv_cache().param_dtype(), v1::KV_PARAM_DTYPE_BFLOAT16);
  EXPECT_EQ(proto.kv_cache().bytes_per_token(), 280);
  EXPECT_EQ(proto.kv_cache().pool_bytes(), 280 * 2049);
  EXPECT_EQ(proto.capacity().slots_total(), 2048);
  EXPECT_EQ(proto.capacity().slots_free(), 2000);
  EXPECT_EQ(proto.capacity().max_batch(), 8);
  EXPECT_EQ(proto.capacity().max_seq_len(), 256);
  EXPECT_EQ(proto.capacity().max_new_tokens(), 255);
  EXPECT_EQ(proto.capacity().max_queue(), 64);
  EXPECT_EQ(proto.capacity().max_step_tokens(), 256);
  EXPECT_EQ(proto.capacity().running(), 2);
  EXPECT_EQ(proto.capacity().queued(), 3);
  EXPECT_EQ(proto.capacity().engine_steps(), 77);
  EXPECT_TRUE(proto.capacity().draining());
  EXPECT_EQ(proto.capacity().failure(), "the engine stopped serving");
  EXPECT_EQ(proto.backend().backend(), "cuda");
  EXPECT_EQ(proto.backend().device_name(), "Some GPU");
  EXPECT_TRUE(proto.backend().cuda_graphs());
  EXPECT_THAT(proto.backend().graph_buckets(), ElementsAre(1, 2, 4));
}

TEST(ServerInfoToProtoTest, SymmetricFloat16) {
  EngineInfo info;
  const v1::ServerInfo proto = ServerInfoToProto(info, ServerDetails());
  EXPECT_EQ(proto.kv_cache().mode(), v1::KV_QUANT_MODE_SYMMETRIC);
  EXPECT_EQ(proto.kv_cache().param_dtype(), v1::KV_PARAM_DTYPE_FLOAT16);
}

TEST(ServerInfoToProtoTest, NoGraphsNoBuckets) {
  EngineInfo info;
  info.device = "cpu";
  info.device_name = "Some CPU";
  const v1::ServerInfo proto = ServerInfoToProto(info, ServerDetails());
  EXPECT_EQ(proto.backend().backend(), "cpu");
  EXPECT_EQ(proto.backend().device_name(), "Some CPU");
  EXPECT_FALSE(proto.backend().cuda_graphs());
  EXPECT_TRUE(proto.backend().graph_buckets().empty());
}

}  // namespace
}  // namespace int4kv
