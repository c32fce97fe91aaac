// The load generator (//tools:int4kv_loadgen) against the int4kv_server binary: 256
// concurrent streams in a closed loop all complete with no error and no broken response;
// an open loop at a fixed rate sends about rate * duration requests; non-loopback targets
// are refused before anything is sent; the JSON output carries the numbers; a closed loop
// that outruns the server parks its refused streams; a server that is still loading its
// model is waited for until --connect_timeout.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/reliability/reliability_testing.h"
#include "tests/testing/generate_call.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kLoadgen[] = "tools/int4kv_loadgen";

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir != nullptr ? dir : "/tmp", "/", name);
}

std::string ReadFile(const std::string& path) {
  std::ifstream file(path);
  std::ostringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

// The number after "key": in `json` (the first occurrence), or -1.
double JsonNumber(const std::string& json, const std::string& key) {
  std::smatch match;
  if (!std::regex_search(json, match, std::regex("\"" + key + "\": (-?[0-9.eE+-]+)"))) return -1;
  return std::stod(match[1]);
}

class LoadgenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        StartServing({"--max_batch=32", "--max_queue=512", "--log_level=warn"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  std::unique_ptr<ServerProcess> server_;
};

// Kills `server` (SIGKILL) once it has run a step, from a thread of its own: mid-run for a load
// generator started beside it, however long that takes to connect.
std::thread KillOnceServing(ServerProcess* server) {
  return std::thread([server] {
    auto stub = v1::TokenGeneration::NewStub(server->Channel());
    EXPECT_TRUE(
        WaitFor([&] { return GetInfo(*stub).capacity().engine_steps() > 0; }, absl::Seconds(60)))
        << "the load generator's requests never ran";
    server->Signal(SIGKILL);
  });
}

TEST_F(LoadgenTest, TwoHundredFiftySixConcurrentStreamsAllComplete) {
  const std::string json = TempPath("closed.json");
  const int requests = Scaled(768, 512);
  // Greedy probes beside the load, each of which must give the tokens it gets alone: the
  // report's checks are structural (finish, usage, ids in the vocabulary), and a row mixed up
  // with another in a full batch of 32 would pass them.
  auto stub = v1::TokenGeneration::NewStub(server_->Channel());
  std::mt19937_64 rng(11);
  std::vector<v1::GenerateRequest> probes;
  for (int i = 0; i < 4; ++i) probes.push_back(RandomGreedyRequest(rng, 512, 6 + 3 * i, 16));
  const std::vector<std::vector<int32_t>> alone = IdleOutputs(*stub, probes);
  std::atomic<bool> load_done{false};
  int probes_under_load = 0;
  std::thread prober([&] {
    for (size_t i = 0; !load_done.load(); i = (i + 1) % probes.size()) {
      const GenerateCall call = RunGenerate(*stub, probes[i], absl::Seconds(60));
      if (load_done.load()) break;  // it may have run alone at the end
      EXPECT_TRUE(call.status.ok()) << StatusText(call.status);
      EXPECT_EQ(call.tokens, alone[i]) << "probe " << i << " under load";
      ++probes_under_load;
    }
  });
  std::string output;
  const int code =
      RunCommand(absl::StrCat(kLoadgen, " --server=", server_->address(),
                              " --concurrency=256 --duration=0 --num_requests=", requests,
                              " --prompt_len=4-16 --output_len=4-8 --json=", json),
                 &output);
  load_done.store(true);
  prober.join();
  ASSERT_EQ(code, 0) << output;
  EXPECT_GT(probes_under_load, 0);
  std::printf("%d greedy probes ran under the load, each giving its tokens alone\n",
              probes_under_load);
  EXPECT_THAT(output, HasSubstr("closed loop, 256 concurrent streams"));
  EXPECT_THAT(output, HasSubstr("errors: none"));
  const std::string report = ReadFile(json);
  // A progress line a second, sending or draining (a fast machine may finish sooner).
  if (JsonNumber(report, "wall_s") > 1.5) {
    EXPECT_THAT(output, testing::ContainsRegex("\\] (sending |draining) sent "));
  }
  EXPECT_EQ(JsonNumber(report, "sent"), requests) << report;
  EXPECT_EQ(JsonNumber(report, "ok"), requests) << report;
  EXPECT_EQ(JsonNumber(report, "failed"), 0) << report;
  EXPECT_EQ(JsonNumber(report, "bad_responses"), 0) << report;
  EXPECT_EQ(JsonNumber(report, "peak_in_flight"), 256) << report;
  const double tokens = JsonNumber(report, "output_tokens");
  EXPECT_GE(tokens, 4.0 * requests);
  EXPECT_LE(tokens, 8.0 * requests);
  EXPECT_GT(JsonNumber(report, "requests_per_s"), 0);
  EXPECT_GT(JsonNumber(report, "p99"), 0);  // ttft p99, the first latency block
  // One inter-token sample for every token after each request's first, also for tokens that
  // came in one response with the first.
  std::smatch itl;
  ASSERT_TRUE(std::regex_search(report, itl, std::regex("\"itl_ms\": \\{\"count\": ([0-9]+)")))
      << report;
  EXPECT_EQ(std::stod(itl[1]), tokens - requests) << report;
  EXPECT_TRUE(WaitUntilIdle(*stub).idle());
  ExpectServingThenCleanStop(*server_);
}

TEST_F(LoadgenTest, OpenLoopSendsAtTheRequestedRate) {
  const std::string json = TempPath("open.json");
  std::string output;
  const int code = RunCommand(absl::StrCat(kLoadgen, " --server=", server_->address(),
                                           " --rate=50 --duration=3s --prompt_len=8 "
                                           "--output_len=2-6 --seed=5 --json=",
                                           json),
                              &output);
  ASSERT_EQ(code, 0) << output;
  EXPECT_THAT(output, HasSubstr("open loop, Poisson arrivals at 50 req/s"));
  EXPECT_THAT(output, HasSubstr("] sending  sent "));  // a progress line a second, for 3 s
  const std::string report = ReadFile(json);
  const double sent = JsonNumber(report, "sent");
  // Poisson count over 3 s at 50/s: mean 150, sd ~12.
  EXPECT_GE(sent, 100) << report;
  EXPECT_LE(sent, 200) << report;
  EXPECT_EQ(JsonNumber(report, "ok"), sent) << report;
  EXPECT_EQ(JsonNumber(report, "not_sent"), 0) << report;
  // An open loop sends until --duration ends, and its wall time covers that window.
  EXPECT_GE(JsonNumber(report, "wall_s"), 3.0) << report;
}

// A rate the sender cannot keep up with: every arrival before the end of sending is still
// sent or counted as not sent (a pass that came late used to drop the ones it had missed).
TEST_F(LoadgenTest, OpenLoopAccountsForEveryArrivalWhenTheSenderFallsBehind) {
  const std::string json = TempPath("behind.json");
  std::string output;
  const int code = RunCommand(absl::StrCat(kLoadgen, " --server=", server_->address(),
                                           " --rate=200000 --max_in_flight=4096 --duration=0.5s "
                                           "--prompt_len=4 --output_len=1 --seed=9 --json=",
                                           json),
                              &output);
  ASSERT_EQ(code, 0) << output;
  const std::string report = ReadFile(json);
  // Poisson count over 0.5 s at 200,000/s: mean 100,000, sd ~316.
  const double arrivals = JsonNumber(report, "sent") + JsonNumber(report, "not_sent");
  EXPECT_GE(arrivals, 98500) << report;
  EXPECT_LE(arrivals, 101500) << report;
  // 200,000 arrivals a second outrun one sender thread: it must have fallen behind, and say so.
  EXPECT_GT(JsonNumber(report, "max_send_lag_ms"), 1.0) << report;
  // No server here takes 200,000 requests a second: the streams reach --max_in_flight, never
  // pass it, and the arrivals beyond it are counted as not sent.
  EXPECT_LE(JsonNumber(report, "peak_in_flight"), 4096) << report;
  EXPECT_GT(JsonNumber(report, "not_sent"), 0) << report;
  auto stub = v1::TokenGeneration::NewStub(server_->Channel());
  EXPECT_TRUE(WaitUntilIdle(*stub).idle());
}

TEST_F(LoadgenTest, RefusesNonLoopbackTargetsAndImpossibleMixes) {
  std::string output;
  EXPECT_EQ(RunCommand(absl::StrCat(kLoadgen, " --server=192.0.2.7:", server_->port()), &output),
            2);
  EXPECT_THAT(output, HasSubstr("--server = '192.0.2.7:"));
  EXPECT_THAT(output, HasSubstr("only targets this machine"));

  EXPECT_EQ(RunCommand(absl::StrCat(kLoadgen, " --server=", server_->address(),
                                    " --prompt_len=500 --output_len=100"),
                       &output),
            2);
  EXPECT_THAT(output, HasSubstr("exceeds its max_seq_len (512)"));
  // Flags out of range, and a --json path that cannot be written, before any request.
  for (const auto& [flag, expected] : std::vector<std::pair<std::string, std::string>>{
           {"--rate=1e12", "--rate = 1e+12 is invalid: must be 0 (closed loop) or in [0.001, "},
           {"--connect_timeout=0s", "--connect_timeout = 0 is invalid: must be > 0"},
           {"--json=/nonexistent/dir/load.json",
            "--json = /nonexistent/dir/load.json cannot be written"}}) {
    EXPECT_EQ(
        RunCommand(absl::StrCat(kLoadgen, " --server=", server_->address(), " ", flag), &output), 2)
        << flag;
    EXPECT_THAT(output, HasSubstr(expected)) << flag;
  }
  auto stub = v1::TokenGeneration::NewStub(server_->Channel());
  EXPECT_EQ(GetInfo(*stub).capacity().engine_steps(), 0) << "nothing may have been sent";
}

// A run refused once the server has answered (outputs longer than it allows) leaves the
// report already at the --json path as it was.
TEST_F(LoadgenTest, ARefusedRunKeepsThePreviousJsonReport) {
  const std::string json = TempPath("kept.json");
  std::ofstream(json) << "{\"previous\": 1}\n";
  std::string output;
  EXPECT_EQ(RunCommand(absl::StrCat(kLoadgen, " --server=", server_->address(),
                                    " --output_len=600 --json=", json),
                       &output),
            2)
      << output;
  EXPECT_THAT(output, HasSubstr("exceeds its max_new_tokens limit"));
  EXPECT_EQ(ReadFile(json), "{\"previous\": 1}\n");
  // With no report there before, a refused run leaves none: not an empty file.
  const std::string fresh = TempPath("never.json");
  EXPECT_EQ(RunCommand(absl::StrCat(kLoadgen, " --server=", server_->address(),
                                    " --output_len=600 --json=", fresh),
                       &output),
            2)
      << output;
  EXPECT_FALSE(std::ifstream(fresh).good()) << fresh << " was left behind";
}

// A server that dies mid-run: the load generator stops sending once requests keep ending
// UNAVAILABLE, reports it and exits 1, instead of flooding the address until --duration.
TEST_F(LoadgenTest, StopsWhenTheServerGoesAway) {
  std::thread killer = KillOnceServing(server_.get());
  std::string output;
  const absl::Time start = absl::Now();
  const int code = RunCommand(absl::StrCat(kLoadgen, " --server=", server_->address(),
                                           " --concurrency=16 --duration=60s --prompt_len=4 "
                                           "--output_len=64"),
                              &output);
  const absl::Duration took = absl::Now() - start;
  killer.join();
  EXPECT_EQ(code, 1) << output;
  EXPECT_THAT(output, HasSubstr("SERVER LOST: sending stopped after 256 requests in a row ended "
                                "UNAVAILABLE"));
  EXPECT_THAT(output, HasSubstr("the server stopped answering"));
  EXPECT_LT(took, absl::Seconds(30)) << output;
}

// A server that dies in a run too short for 256 failures in a row: the run still ends on
// requests UNAVAILABLE, which the report calls a lost server, with exit status 1.
TEST_F(LoadgenTest, ARunEndingOnUnavailableRequestsLostItsServer) {
  std::thread killer = KillOnceServing(server_.get());
  std::string output;
  // About 120 arrivals over 6 s, most of them after the kill.
  const int code = RunCommand(absl::StrCat(kLoadgen, " --server=", server_->address(),
                                           " --rate=20 --duration=6s --prompt_len=4 "
                                           "--output_len=16"),
                              &output);
  killer.join();
  EXPECT_EQ(code, 1) << output;
  EXPECT_THAT(output, HasSubstr("SERVER LOST: the run ended with "));
  EXPECT_THAT(output, HasSubstr("the server stopped answering"));
}

// A closed loop with more streams than the server takes (batch 1, queue 1): a stream refused
// with RESOURCE_EXHAUSTED waits for another request to finish before it sends again, so the
// refusals stay near one a finished request instead of flooding the server.
TEST(LoadgenOverloadTest, RefusedStreamsWaitForRoomInsteadOfResendingAtOnce) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      StartServing({"--max_batch=1", "--max_queue=1", "--log_level=warn"});
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string json = TempPath("overload.json");
  std::string output;
  const int code = RunCommand(absl::StrCat(kLoadgen, " --server=", (*server)->address(),
                                           " --concurrency=32 --duration=2s --prompt_len=4 "
                                           "--output_len=16 --json=",
                                           json),
                              &output);
  ASSERT_EQ(code, 0) << output;
  const std::string report = ReadFile(json);
  const double ok = JsonNumber(report, "ok");
  const double refused = JsonNumber(report, "RESOURCE_EXHAUSTED");
  EXPECT_GT(ok, 0) << report;
  EXPECT_GT(refused, 0) << report;  // the loop did outrun the server
  // The first round refuses 30 of 32; after that each finished request lets one parked
  // stream try again. Resent at once, a refused stream comes back within a millisecond.
  EXPECT_LE(refused, 30 + 2 * ok) << report;
  EXPECT_EQ(JsonNumber(report, "sent"), ok + JsonNumber(report, "failed")) << report;
  auto stub = v1::TokenGeneration::NewStub((*server)->Channel());
  EXPECT_TRUE(WaitUntilIdle(*stub).idle());
}

// A server that opens its port and then loads forever (ServerProcess::StartNeverLoading)
// answers GetServerInfo with UNAVAILABLE ("the server is starting"); the load generator keeps
// asking until --connect_timeout runs out, then fails naming it.
TEST(LoadgenStartupTest, WaitsForAServerStillLoadingUntilTheConnectTimeout) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::StartNeverLoading(TempPath("never_written.bin"));
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE(WaitForHealth((*server)->Channel(),
                            grpc::health::v1::HealthCheckResponse::NOT_SERVING, absl::Seconds(5)));

  std::string output;
  const absl::Time start = absl::Now();
  const int code = RunCommand(
      absl::StrCat(kLoadgen, " --server=", (*server)->address(), " --connect_timeout=2s"), &output);
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(code, 1) << output;
  EXPECT_GE(took, absl::Seconds(2)) << output;
  EXPECT_LT(took, absl::Seconds(10)) << output;
  EXPECT_THAT(output, HasSubstr("still failed when --connect_timeout = 2s ran out: UNAVAILABLE: "
                                "the server is starting"));
  EXPECT_THAT(output, Not(HasSubstr("requests/s")));  // no load was run
  EXPECT_FALSE((*server)->Exited());
}

}  // namespace
}  // namespace int4kv
