// Drain under load: SIGTERM to the int4kv_server binary while clients keep it busy (every
// batch slot running, requests queued, new ones arriving). Every request the server accepted
// either finishes with exactly its idle-server tokens or, when --drain_timeout cuts it short,
// ends UNAVAILABLE saying the server shut down before it finished, after a correct prefix.
// Requests the server did not accept end without tokens: RESOURCE_EXHAUSTED (queue full),
// UNAVAILABLE (draining, or the port closed), or CANCELLED when they arrive while gRPC shuts
// down (see IsRefusal). No other status appears, and the process exits 0.
#include <signal.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/reliability/reliability_testing.h"
#include "tests/testing/generate_call.h"

namespace int4kv {
namespace {

constexpr char kDrainCut[] = "shut down before the request finished";

struct Finished {
  int request;
  absl::Time start;
  absl::Time end;
  GenerateCall call;
};

struct DrainRun {
  std::vector<Finished> finished;
  absl::Time signal_time;
  absl::Time exit_time;  // when the process was seen to have exited
  CapacityCounts at_signal;
  int exit_code = -1;
  std::string log;
};

// When `f` started and ended, relative to the signal and the exit, for failure messages.
std::string Timing(const Finished& f, const DrainRun& run) {
  return absl::StrCat("started ", absl::FormatDuration(f.start - run.signal_time),
                      " after SIGTERM, ended ", absl::FormatDuration(f.end - run.signal_time),
                      " after it (the process exited ",
                      absl::FormatDuration(run.exit_time - run.signal_time), " after it), ",
                      f.call.tokens.size(), " tokens");
}

// How a request the server did not accept may end: RESOURCE_EXHAUSTED naming the queue
// limit (before the drain), UNAVAILABLE after the signal (the engine refuses new requests
// while draining; once the port closes the channel cannot connect), or CANCELLED for a call
// that started after the signal and reached the server while gRPC itself was shutting down
// (the sync server cancels calls no handler has taken yet).
bool IsRefusal(const Finished& f, const DrainRun& run) {
  if (!f.call.tokens.empty()) return false;
  const grpc::Status& status = f.call.status;
  switch (status.error_code()) {
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return absl::StrContains(status.error_message(), "max_queue");
    case grpc::StatusCode::UNAVAILABLE:
      return f.end >= run.signal_time && !status.error_message().empty() &&
             !absl::StrContains(status.error_message(), kDrainCut);
    case grpc::StatusCode::CANCELLED:
      return f.start >= run.signal_time;
    default:
      return false;
  }
}

// Starts a server with `args`, keeps `clients` client threads sending requests (round-robin
// over `requests`) until it is busy, sends SIGTERM, and collects every call until the process
// has exited and the clients have stopped. `expected` gets the idle-server outputs.
DrainRun RunDrain(const std::vector<std::string>& args,
                  const std::vector<v1::GenerateRequest>& requests,
                  std::vector<std::vector<int32_t>>* expected, int clients) {
  DrainRun run;
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = StartServing(args);
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return run;
  const auto channels = OpenChannels((*server)->address(), 4);
  auto stub = v1::TokenGeneration::NewStub(channels[0]);
  *expected = IdleOutputs(*stub, requests);
  const CapacityCounts capacity = WaitUntilIdle(*stub);

  std::mutex mutex;
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      auto client_stub = v1::TokenGeneration::NewStub(channels[c % channels.size()]);
      for (int n = 0; !stop; ++n) {
        Finished f;
        f.request = (c + n) % static_cast<int>(requests.size());
        f.start = absl::Now();
        f.call = RunGenerate(*client_stub, requests[f.request], absl::Seconds(120));
        f.end = absl::Now();
        const bool refused = !f.call.status.ok() && f.call.tokens.empty();
        {
          std::lock_guard<std::mutex> lock(mutex);
          run.finished.push_back(std::move(f));
        }
        if (refused) absl::SleepFor(absl::Milliseconds(5));  // full, or going away
      }
    });
  }
  // Busy: every batch slot running and requests waiting.
  EXPECT_TRUE(WaitFor(
      [&] {
        run.at_signal = CapacityCounts::From(GetInfo(*stub));
        return run.at_signal.running == capacity.max_batch && run.at_signal.queued > 0;
      },
      absl::Seconds(30)))
      << run.at_signal;
  run.signal_time = absl::Now();
  (*server)->Signal(SIGTERM);
  run.exit_code = (*server)->Wait(absl::Seconds(120));
  run.exit_time = absl::Now();
  absl::SleepFor(absl::Milliseconds(200));  // the clients see the closed port
  stop = true;
  for (std::thread& thread : threads) thread.join();
  run.log = (*server)->Log();
  return run;
}

TEST(DrainTest, SigtermWhileBusyFinishesEveryAcceptedRequest) {
  std::mt19937_64 rng(41);
  std::vector<v1::GenerateRequest> requests;
  for (int i = 0; i < 6; ++i) {
    requests.push_back(RandomGreedyRequest(rng, 512, 1 + static_cast<int32_t>(rng() % 30),
                                           40 + static_cast<int32_t>(rng() % 41)));
  }
  std::vector<std::vector<int32_t>> expected;
  const DrainRun run =
      RunDrain({"--max_batch=4", "--max_queue=8", "--drain_timeout=120s", "--log_level=info"},
               requests, &expected, 16);
  EXPECT_EQ(run.exit_code, 0) << run.log;
  EXPECT_TRUE(absl::StrContains(run.log, "SIGTERM: draining")) << run.log;

  int finished_after_signal = 0;
  int refused = 0;
  for (const Finished& f : run.finished) {
    const grpc::Status& status = f.call.status;
    if (status.ok()) {
      EXPECT_EQ(f.call.tokens, expected[f.request]) << Timing(f, run);
      if (f.start < run.signal_time && f.end > run.signal_time) ++finished_after_signal;
      continue;
    }
    // Not accepted: the long drain timeout lets everything accepted finish.
    EXPECT_TRUE(IsRefusal(f, run)) << StatusText(status) << "; " << Timing(f, run);
    if (status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) ++refused;
  }
  // What was running and queued at the signal finished afterwards.
  EXPECT_GE(finished_after_signal, run.at_signal.running + run.at_signal.queued) << run.at_signal;
  EXPECT_GT(refused, 0) << "no request arrived during the drain";
  std::printf(
      "drain: %zu calls; at SIGTERM %d running, %d queued; %d finished after it, %d "
      "refused while draining or after exit\n",
      run.finished.size(), run.at_signal.running, run.at_signal.queued, finished_after_signal,
      refused);
}

TEST(DrainTest, DrainTimeoutEndsTheRestWithAClearUnavailable) {
  std::mt19937_64 rng(43);
  std::vector<v1::GenerateRequest> requests;
  for (int i = 0; i < 4; ++i) {
    requests.push_back(
        RandomGreedyRequest(rng, 512, 1 + static_cast<int32_t>(rng() % 10), Scaled(400, 200)));
  }
  std::vector<std::vector<int32_t>> expected;
  const DrainRun run =
      RunDrain({"--max_batch=4", "--max_queue=8", "--drain_timeout=100ms", "--log_level=info"},
               requests, &expected, 12);
  EXPECT_EQ(run.exit_code, 0) << run.log;

  int cut = 0;
  int finished_after_signal = 0;
  for (const Finished& f : run.finished) {
    const grpc::Status& status = f.call.status;
    EXPECT_TRUE(IsPrefix(f.call.tokens, expected[f.request]))
        << StatusText(status) << "; " << Timing(f, run);
    if (status.ok()) {
      EXPECT_EQ(f.call.tokens, expected[f.request]);
      if (f.start < run.signal_time && f.end > run.signal_time) ++finished_after_signal;
    } else if (status.error_code() == grpc::StatusCode::UNAVAILABLE &&
               absl::StrContains(status.error_message(), kDrainCut)) {
      ++cut;  // accepted, then ended by the drain timeout
    } else {
      EXPECT_TRUE(IsRefusal(f, run))
          << "a request ended unclearly: " << StatusText(status) << "; " << Timing(f, run);
    }
  }
  // The requests running and queued at the signal finished in time or were ended by the
  // timeout, and the timeout did end some.
  EXPECT_GE(cut + finished_after_signal, run.at_signal.running + run.at_signal.queued)
      << run.at_signal;
  EXPECT_GT(cut, 0);
  std::printf(
      "drain timeout: %zu calls; at SIGTERM %d running, %d queued; %d ended UNAVAILABLE "
      "by the drain timeout\n",
      run.finished.size(), run.at_signal.running, run.at_signal.queued, cut);
}

}  // namespace
}  // namespace int4kv
