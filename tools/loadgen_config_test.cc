#include "tools/loadgen_config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

LoadgenConfig Valid() {
  LoadgenConfig config;
  config.target = "127.0.0.1:50051";
  return config;
}

// stories260K's limits with the server's default flags.
v1::ServerInfo Server() {
  v1::ServerInfo info;
  info.mutable_model()->set_vocab_size(512);
  info.mutable_capacity()->set_max_new_tokens(511);
  info.mutable_capacity()->set_max_seq_len(512);
  info.mutable_capacity()->set_slots_total(4096);
  return info;
}

TEST(LoadgenConfigTest, DefaultsAreValid) {
  EXPECT_TRUE(ValidateConfig(Valid()).ok());
  EXPECT_TRUE(CheckAgainstServer(Valid(), Server()).ok());
}

TEST(LoadgenConfigTest, WarnsWhenMoreStreamsThanTheServerTakes) {
  v1::ServerInfo info = Server();
  info.mutable_capacity()->set_max_batch(8);
  info.mutable_capacity()->set_max_queue(64);
  LoadgenConfig config = Valid();
  config.concurrency = 72;
  EXPECT_EQ(OverloadWarning(config, info), "");
  config.concurrency = 73;
  EXPECT_THAT(OverloadWarning(config, info),
              HasSubstr("--concurrency = 73 exceeds what the server takes at once (max_batch + "
                        "max_queue = 72)"));
  EXPECT_THAT(OverloadWarning(config, info), HasSubstr("wait for another request to finish"));
  config.rate = 100;  // open loop: the bound is --max_in_flight
  config.max_in_flight = 72;
  EXPECT_EQ(OverloadWarning(config, info), "");
  config.max_in_flight = 1024;
  EXPECT_THAT(OverloadWarning(config, info), HasSubstr("--max_in_flight = 1024 exceeds"));
  EXPECT_THAT(OverloadWarning(config, info), Not(HasSubstr("wait for another request")));
}

TEST(LoadgenConfigTest, BadFlagsAreNamedWithTheirRange) {
  struct Case {
    void (*mutate)(LoadgenConfig&);
    const char* expected;
  };
  const Case cases[] = {
      {[](LoadgenConfig& c) { c.concurrency = 0; },
       "--concurrency = 0 is invalid: must be in [1, 4096]"},
      {[](LoadgenConfig& c) { c.concurrency = 5000; }, "--concurrency = 5000"},
      {[](LoadgenConfig& c) { c.rate = -1; }, "--rate = -1"},
      // Gaps between arrivals at 1e12 per second round to nothing: the run never ended.
      {[](LoadgenConfig& c) { c.rate = 1e12; },
       "--rate = 1e+12 is invalid: must be 0 (closed loop) or in [0.001, 1e+06]"},
      // One arrival in 3e299 s: the run sent nothing and never ended.
      {[](LoadgenConfig& c) { c.rate = 1e-300; },
       "--rate = 1e-300 is invalid: must be 0 (closed loop) or in [0.001, 1e+06]"},
      {[](LoadgenConfig& c) { c.connect_timeout = absl::Seconds(-1); },
       "--connect_timeout = -1s is invalid: must be > 0"},
      {[](LoadgenConfig& c) {
         c.rate = 10;
         c.max_in_flight = 0;
       },
       "--max_in_flight = 0"},
      {[](LoadgenConfig& c) { c.num_requests = -5; }, "--num_requests = -5"},
      {[](LoadgenConfig& c) { c.duration = absl::ZeroDuration(); }, "both 0"},
      {[](LoadgenConfig& c) { c.temperature = 101; }, "--temperature = 101"},
      {[](LoadgenConfig& c) { c.channels = 0; }, "--channels = 0 is invalid: must be in [1, 64]"},
      {[](LoadgenConfig& c) { c.deadline = absl::ZeroDuration(); }, "--deadline"},
      {[](LoadgenConfig& c) { c.progress_interval = absl::Seconds(-1); },
       "--progress_interval = -1s is invalid: must be >= 0"},
  };
  for (const Case& c : cases) {
    LoadgenConfig config = Valid();
    c.mutate(config);
    const absl::Status status = ValidateConfig(config);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.expected;
    EXPECT_THAT(status.message(), HasSubstr(c.expected));
  }
}

// The ranges' ends are valid values.
TEST(LoadgenConfigTest, RangeEndsAreAccepted) {
  LoadgenConfig config = Valid();
  config.temperature = 100;
  config.progress_interval = absl::ZeroDuration();
  EXPECT_TRUE(ValidateConfig(config).ok()) << ValidateConfig(config);
  config.prompt_len = {1, 1};
  config.output_len = {1, 511};  // the server's max_new_tokens
  EXPECT_TRUE(CheckAgainstServer(config, Server()).ok()) << CheckAgainstServer(config, Server());
  // A server that reports no vocabulary leaves no token id to send.
  v1::ServerInfo no_vocab = Server();
  no_vocab.mutable_model()->set_vocab_size(0);
  EXPECT_EQ(CheckAgainstServer(Valid(), no_vocab).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(LoadgenConfigTest, OpenLoopIgnoresConcurrency) {
  LoadgenConfig config = Valid();
  config.rate = 50;
  config.concurrency = 0;
  EXPECT_TRUE(ValidateConfig(config).ok());
}

TEST(LoadgenConfigTest, RequestMixBeyondTheServersLimitsIsRefusedBeforeSending) {
  LoadgenConfig config = Valid();
  config.output_len = {1, 600};
  EXPECT_THAT(CheckAgainstServer(config, Server()).message(),
              HasSubstr("--output_len = '1-600' is invalid for this server: 600 exceeds its "
                        "max_new_tokens limit (511)"));

  config.output_len = {100, 100};
  config.prompt_len = {1, 412};
  EXPECT_TRUE(CheckAgainstServer(config, Server()).ok());  // 512 tokens: at the limit
  config.prompt_len = {1, 413};
  EXPECT_THAT(CheckAgainstServer(config, Server()).message(),
              HasSubstr("the longest request (513 tokens) exceeds its max_seq_len (512)"));

  v1::ServerInfo small_kv = Server();
  small_kv.mutable_capacity()->set_slots_total(300);
  config.prompt_len = {250, 250};
  config.output_len = {60, 60};
  EXPECT_THAT(CheckAgainstServer(config, small_kv).message(),
              HasSubstr("exceeds its KV cache capacity (300 token slots)"));
}

}  // namespace
}  // namespace int4kv
