// A client that stops reading: its HTTP/2 window stays closed, so the server's Write of the
// first response blocks. With --write_stall_timeout the server ends the call (the client sees
// its stream reset), the engine request is cancelled, every slot comes back and
// other clients are served as before; without it the call waits for the client, however
// long, until the connection closes.
#include "tests/reliability/stalled_reader.h"

#include <algorithm>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "common/monotonic_time.h"
#include "gtest/gtest.h"
#include "tests/reliability/reliability_testing.h"
#include "tests/reliability/thread_count.h"
#include "tests/testing/generate_call.h"

namespace int4kv {
namespace {

constexpr char kGenerate[] = "/int4kv.v1.TokenGeneration/Generate";
constexpr char kGetServerInfo[] = "/int4kv.v1.TokenGeneration/GetServerInfo";
// RST_STREAM error codes: NO_ERROR once the call's trailers (grpc-status CANCELLED, which
// HEADERS frames carry past a closed window) have gone out, CANCEL before.
constexpr uint32_t kHttp2NoError = 0x0, kHttp2Cancel = 0x8;

// A server started with `write_stall_timeout`, idle, and the request the tests send.
struct IdleServer {
  std::unique_ptr<ServerProcess> process;
  std::unique_ptr<v1::TokenGeneration::Stub> stub;
  CapacityCounts idle;
  v1::GenerateRequest request;
};

void StartIdleServer(const std::string& write_stall_timeout, IdleServer* server,
                     const std::vector<std::string>& more_flags = {}) {
  std::vector<std::string> flags = {"--write_stall_timeout=" + write_stall_timeout,
                                    "--log_level=warn"};
  flags.insert(flags.end(), more_flags.begin(), more_flags.end());
  absl::StatusOr<std::unique_ptr<ServerProcess>> process = StartServing(flags);
  ASSERT_TRUE(process.ok()) << process.status();
  server->process = std::move(*process);
  server->stub = v1::TokenGeneration::NewStub(server->process->Channel());
  server->idle = WaitUntilIdle(*server->stub);
  ASSERT_TRUE(server->idle.idle()) << server->idle;
  std::mt19937_64 rng(7);
  server->request = RandomGreedyRequest(rng, 512, 8, 64);
}

TEST(StalledReaderTest, AReaderThatStopsIsCancelledAfterTheWriteStallTimeout) {
  IdleServer server;
  ASSERT_NO_FATAL_FAILURE(StartIdleServer("1s", &server));
  absl::StatusOr<StalledReader> reader = StalledReader::Connect(server.process->port());
  ASSERT_TRUE(reader.ok()) << reader.status();
  const absl::Time started = MonotonicNow();
  ASSERT_TRUE(reader->StartCall(kGenerate, server.request.SerializeAsString()).ok());
  const absl::StatusOr<StalledReader::Reset> reset = reader->WaitForReset(absl::Seconds(30));
  ASSERT_TRUE(reset.ok()) << reset.status() << "\n" << server.process->Log();
  EXPECT_FALSE(reset->goaway) << "the connection was closed, not the call";
  EXPECT_TRUE(reset->error_code == kHttp2NoError || reset->error_code == kHttp2Cancel)
      << reset->error_code;
  // The stall began after the call did, so the limit cannot have passed any sooner.
  EXPECT_GE(MonotonicNow() - started, absl::Seconds(1));

  // Nothing leaked, and a client that reads is served in full.
  EXPECT_EQ(WaitUntilIdle(*server.stub), server.idle);
  const GenerateCall call = RunGenerate(*server.stub, server.request);
  ASSERT_TRUE(call.status.ok()) << StatusText(call.status);
  EXPECT_EQ(call.tokens.size(), 64u);
}

// Each stalled Generate call holds a server thread, blocked in its Write, until the write
// stall timeout ends it; then the threads go back although the connections stay open. A server
// that cancelled the engine request but left the handler blocked would keep them.
TEST(StalledReaderTest, StalledGenerateCallsGiveTheirThreadsBackAfterTheWriteStallTimeout) {
  IdleServer server;
  // Long enough that the first calls still stall while the last connect, on a loaded machine.
  ASSERT_NO_FATAL_FAILURE(StartIdleServer("5s", &server));
  const pid_t pid = server.process->pid();
  const absl::StatusOr<int> idle_threads = ThreadCount(pid);
  ASSERT_TRUE(idle_threads.ok()) << idle_threads.status();

  const int calls = Scaled(16, 6);
  std::vector<StalledReader> readers;
  for (int i = 0; i < calls; ++i) {
    absl::StatusOr<StalledReader> reader = StalledReader::Connect(server.process->port());
    ASSERT_TRUE(reader.ok()) << reader.status();
    ASSERT_TRUE(reader->StartCall(kGenerate, server.request.SerializeAsString()).ok());
    readers.push_back(std::move(*reader));
  }
  int most_threads = *idle_threads;
  EXPECT_TRUE(WaitFor(
      [&] {
        most_threads = std::max(most_threads, ThreadCount(pid).value_or(0));
        return most_threads >= *idle_threads + calls;
      },
      absl::Seconds(30)))
      << "stalled calls took the server from " << *idle_threads << " to at most " << most_threads
      << " threads";

  for (StalledReader& reader : readers) {
    const absl::StatusOr<StalledReader::Reset> reset = reader.WaitForReset(absl::Seconds(30));
    ASSERT_TRUE(reset.ok()) << reset.status() << "\n" << server.process->Log();
  }
  // After a burst gRPC keeps up to two polling threads (its synchronous server's default
  // max_pollers) where the idle server ran one, and may keep another thread of its own.
  constexpr int kThreadsGrpcMayKeep = 2;
  int threads = 0;
  EXPECT_TRUE(WaitFor(
      [&] {
        threads = ThreadCount(pid).value_or(-1);
        return threads <= *idle_threads + kThreadsGrpcMayKeep;
      },
      absl::Seconds(30)))
      << "the server kept " << threads << " threads (" << *idle_threads << " idle) after every "
      << "stalled call was reset, with the connections still open";
  EXPECT_EQ(WaitUntilIdle(*server.stub), server.idle);
}

TEST(StalledReaderTest, WithoutAWriteStallTimeoutTheCallWaitsForTheClient) {
  IdleServer server;
  ASSERT_NO_FATAL_FAILURE(StartIdleServer("inf", &server, {"--log_level=info"}));
  // The wait below is short; that the server runs with no limit at all, not one longer than
  // the wait, is what its start-up summary says.
  EXPECT_NE(server.process->Log().find("calls: write stall timeout inf,"), std::string::npos)
      << server.process->Log();
  {
    absl::StatusOr<StalledReader> reader = StalledReader::Connect(server.process->port());
    ASSERT_TRUE(reader.ok()) << reader.status();
    ASSERT_TRUE(reader->StartCall(kGenerate, server.request.SerializeAsString()).ok());
    const absl::StatusOr<StalledReader::Reset> reset = reader->WaitForReset(absl::Seconds(3));
    EXPECT_EQ(reset.status().code(), absl::StatusCode::kDeadlineExceeded)
        << "the server ended a stalled call it had no limit for";
  }  // the connection closes: the call is cancelled
  EXPECT_EQ(WaitUntilIdle(*server.stub), server.idle);
}

// --max_rpc_threads bounds the threads of Generate calls only: GetServerInfo runs on gRPC's
// callback API, so stalled readers of it hold no thread (before, unread GetServerInfo replies
// took one each). With 2 threads, 1 Generate runs at a time: 8 stalled GetServerInfo calls
// leave it free for a reading client, and a Generate whose reader stalls takes it, so the next
// is refused RESOURCE_EXHAUSTED.
TEST(StalledReaderTest, StalledServerInfoCallsHoldNoGenerateThread) {
  IdleServer server;
  ASSERT_NO_FATAL_FAILURE(StartIdleServer("inf", &server, {"--max_rpc_threads=2"}));
  std::vector<StalledReader> info_readers;
  for (int i = 0; i < 8; ++i) {
    absl::StatusOr<StalledReader> reader = StalledReader::Connect(server.process->port());
    ASSERT_TRUE(reader.ok()) << reader.status();
    ASSERT_TRUE(
        reader->StartCall(kGetServerInfo, v1::GetServerInfoRequest().SerializeAsString()).ok());
    info_readers.push_back(std::move(*reader));
  }
  const GenerateCall served = RunGenerate(*server.stub, server.request);
  ASSERT_TRUE(served.status.ok()) << StatusText(served.status);
  EXPECT_EQ(served.tokens.size(), 64u);

  absl::StatusOr<StalledReader> generate_reader = StalledReader::Connect(server.process->port());
  ASSERT_TRUE(generate_reader.ok()) << generate_reader.status();
  const int64_t steps_before = GetInfo(*server.stub).capacity().engine_steps();
  ASSERT_TRUE(generate_reader->StartCall(kGenerate, server.request.SerializeAsString()).ok());
  // Its handler has submitted the request (and then blocks in its first Write).
  ASSERT_TRUE(
      WaitFor([&] { return GetInfo(*server.stub).capacity().engine_steps() > steps_before; }));
  const GenerateCall refused = RunGenerate(*server.stub, server.request);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << StatusText(refused.status);
  EXPECT_TRUE(refused.tokens.empty());
}

}  // namespace
}  // namespace int4kv
