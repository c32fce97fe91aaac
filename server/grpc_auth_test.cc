#include "server/grpc_auth.h"

#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

using Metadata = std::multimap<grpc::string_ref, grpc::string_ref>;

Metadata WithAuthorization(const std::string& value) {
  Metadata metadata;
  metadata.emplace("authorization", value);
  return metadata;
}

TEST(BearerTokenAuthTest, DisabledAcceptsEverything) {
  const BearerTokenAuth auth("");
  EXPECT_FALSE(auth.enabled());
  EXPECT_TRUE(auth.Check(Metadata()).ok());
  EXPECT_TRUE(auth.Check(WithAuthorization("Bearer anything")).ok());
}

TEST(BearerTokenAuthTest, AcceptsTheRightTokenWithAnySchemeCase) {
  const BearerTokenAuth auth("s3cret");
  EXPECT_TRUE(auth.enabled());
  EXPECT_TRUE(auth.Check(WithAuthorization("Bearer s3cret")).ok());
  EXPECT_TRUE(auth.Check(WithAuthorization("bearer s3cret")).ok());
}

TEST(BearerTokenAuthTest, RejectsMissingHeader) {
  const BearerTokenAuth auth("s3cret");
  Metadata other;
  other.emplace("x-other", "Bearer s3cret");
  const absl::Status status = auth.Check(other);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(status.message(), HasSubstr("missing authorization"));
}

TEST(BearerTokenAuthTest, RejectsWrongTokensWithoutEchoingThem) {
  const BearerTokenAuth auth("s3cret");
  for (const std::string value :
       {"Bearer s3cre", "Bearer s3cret2", "Bearer S3CRET", "Bearer ", "Bearer  s3cret",
        // The same length, one byte off: the first, a middle and the last.
        "Bearer x3cret", "Bearer s3Cret", "Bearer s3creT", "Bearer s3crex"}) {
    const absl::Status status = auth.Check(WithAuthorization(value));
    EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated) << value;
    EXPECT_THAT(status.message(), HasSubstr("wrong")) << value;
    EXPECT_THAT(status.message(), Not(HasSubstr("s3cre"))) << value;
  }
}

TEST(BearerTokenAuthTest, RejectsOtherSchemes) {
  const BearerTokenAuth auth("s3cret");
  for (const std::string value : {"s3cret", "Basic s3cret", "Bearers3cret"}) {
    const absl::Status status = auth.Check(WithAuthorization(value));
    EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated) << value;
    EXPECT_THAT(status.message(), HasSubstr("not a bearer token")) << value;
  }
}

}  // namespace
}  // namespace int4kv
