#include "tools/loopback_target.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;

TEST(LoopbackTargetTest, AcceptsLoopbackAddresses) {
  EXPECT_EQ(*ParseLoopbackTarget("127.0.0.1:50051"), "127.0.0.1:50051");
  EXPECT_EQ(*ParseLoopbackTarget("127.1.2.3:9"), "127.1.2.3:9");
  EXPECT_EQ(*ParseLoopbackTarget("localhost:50051"), "localhost:50051");
  EXPECT_EQ(*ParseLoopbackTarget("LocalHost:1"), "localhost:1");
  EXPECT_EQ(*ParseLoopbackTarget("[::1]:50051"), "[::1]:50051");
  EXPECT_EQ(*ParseLoopbackTarget("[::ffff:127.0.0.1]:80"), "[::ffff:127.0.0.1]:80");
  EXPECT_EQ(*ParseLoopbackTarget("50051"), "127.0.0.1:50051");
}

TEST(LoopbackTargetTest, RefusesOtherHostsNamingTheFlagAndTheRule) {
  for (const char* server :
       {"10.0.0.5:50051", "192.168.1.1:80", "0.0.0.0:50051", "128.0.0.1:1", "example.com:443",
        "[2001:db8::1]:50051", "[::]:50051", "[::ffff:10.0.0.1]:1", "::1:50051",
        "localhost.example.com:1", "8.8.8.8:53"}) {
    const absl::StatusOr<std::string> target = ParseLoopbackTarget(server);
    ASSERT_FALSE(target.ok()) << server;
    EXPECT_EQ(target.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(target.status().message(), HasSubstr("--server"));
    EXPECT_THAT(target.status().message(), HasSubstr("only targets this machine"));
  }
}

TEST(LoopbackTargetTest, RefusesBadPorts) {
  for (const char* server : {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
                             "127.0.0.1:http", ":50051x"}) {
    EXPECT_FALSE(ParseLoopbackTarget(server).ok()) << server;
  }
}

}  // namespace
}  // namespace int4kv
