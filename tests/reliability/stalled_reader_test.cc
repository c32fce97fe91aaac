// A client that stops reading: its HTTP/2 window stays closed, so the server's Write of the
// first response blocks. With --write_stall_timeout the server ends the call (the client sees
// its stream reset), the engine request is cancelled, every slot comes back and
// other clients are served as before; without it the call waits for the client, however
// long, until the connection closes.
#include "tests/reliability/stalled_reader.h"

#include <memory>
#include <random>

#include "absl/time/time.h"
#include "common/monotonic_time.h"
#include "gtest/gtest.h"
#include "tests/reliability/reliability_testing.h"
#include "tests/testing/generate_call.h"

namespace int4kv {
namespace {

constexpr char kGenerate[] = "/int4kv.v1.TokenGeneration/Generate";
// RST_STREAM error codes: NO_ERROR once the call's trailers (grpc-status CANCELLED, which
// HEADERS frames carry past a closed window) have gone out, CANCEL before.
constexpr uint32_t kHttp2NoError = 0x0, kHttp2Cancel = 0x8;

TEST(StalledReaderTest, AReaderThatStopsIsCancelledAfterTheWriteStallTimeout) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      StartServing({"--write_stall_timeout=1s", "--log_level=warn"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::TokenGeneration::NewStub((*server)->Channel());
  const CapacityCounts before = WaitUntilIdle(*stub);
  ASSERT_TRUE(before.idle()) << before;
  std::mt19937_64 rng(7);
  const v1::GenerateRequest request = RandomGreedyRequest(rng, 512, 8, 64);

  absl::StatusOr<StalledReader> reader = StalledReader::Connect((*server)->port());
  ASSERT_TRUE(reader.ok()) << reader.status();
  const absl::Time started = MonotonicNow();
  ASSERT_TRUE(reader->StartCall(kGenerate, request.SerializeAsString()).ok());
  const absl::StatusOr<StalledReader::Reset> reset = reader->WaitForReset(absl::Seconds(30));
  ASSERT_TRUE(reset.ok()) << reset.status() << "\n" << (*server)->Log();
  EXPECT_FALSE(reset->goaway) << "the connection was closed, not the call";
  EXPECT_TRUE(reset->error_code == kHttp2NoError || reset->error_code == kHttp2Cancel)
      << reset->error_code;
  // The stall began after the call did, so the limit cannot have passed any sooner.
  EXPECT_GE(MonotonicNow() - started, absl::Seconds(1));

  // Nothing leaked, and a client that reads is served in full.
  const CapacityCounts after = WaitUntilIdle(*stub);
  EXPECT_EQ(after, before);
  const GenerateCall call = RunGenerate(*stub, request);
  ASSERT_TRUE(call.status.ok()) << StatusText(call.status);
  EXPECT_EQ(call.tokens.size(), 64u);
}

TEST(StalledReaderTest, WithoutAWriteStallTimeoutTheCallWaitsForTheClient) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      StartServing({"--write_stall_timeout=inf", "--log_level=warn"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::TokenGeneration::NewStub((*server)->Channel());
  const CapacityCounts before = WaitUntilIdle(*stub);
  ASSERT_TRUE(before.idle()) << before;
  std::mt19937_64 rng(7);
  const v1::GenerateRequest request = RandomGreedyRequest(rng, 512, 8, 64);
  {
    absl::StatusOr<StalledReader> reader = StalledReader::Connect((*server)->port());
    ASSERT_TRUE(reader.ok()) << reader.status();
    ASSERT_TRUE(reader->StartCall(kGenerate, request.SerializeAsString()).ok());
    const absl::StatusOr<StalledReader::Reset> reset = reader->WaitForReset(absl::Seconds(3));
    EXPECT_EQ(reset.status().code(), absl::StatusCode::kDeadlineExceeded)
        << "the server ended a stalled call it had no limit for";
  }  // the connection closes: the call is cancelled
  EXPECT_EQ(WaitUntilIdle(*stub), before);
}

}  // namespace
}  // namespace int4kv
