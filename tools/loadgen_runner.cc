#include "tools/loadgen_runner.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/monotonic_time.h"
#include "proto/generation.grpc.pb.h"
#include "tools/load_stats.h"
#include "tools/parked_streams.h"
#include "tools/request_mix.h"
#include "tools/stream_call.h"

namespace int4kv {
namespace {

// Closed loop: how long streams parked after RESOURCE_EXHAUSTED wait before sending again
// when no request is in flight whose end would let them.
constexpr absl::Duration kParkedRetry = absl::Milliseconds(100);

// Finished calls, handed from gRPC's callback threads to the driver thread.
class FinishedCalls {
 public:
  // Notifies under the lock: once the driver has taken the last call it may destroy this
  // queue, and nothing here runs after the unlock.
  void Push(std::unique_ptr<StreamCall> call) {
    std::lock_guard<std::mutex> lock(mutex_);
    calls_.push_back(std::move(call));
    ready_.notify_one();
  }

  // Everything queued, waiting until `until` (at most a second) if nothing is.
  // `until`: a MonotonicNow() reading.
  std::deque<std::unique_ptr<StreamCall>> TakeAll(absl::Time until) {
    const absl::Duration wait =
        std::clamp(until - MonotonicNow(), absl::ZeroDuration(), absl::Seconds(1));
    std::unique_lock<std::mutex> lock(mutex_);
    ready_.wait_for(lock, absl::ToChronoNanoseconds(wait), [&] { return !calls_.empty(); });
    std::deque<std::unique_ptr<StreamCall>> taken;
    taken.swap(calls_);
    return taken;
  }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::unique_ptr<StreamCall>> calls_;  // guarded by mutex_
};

std::vector<std::unique_ptr<v1::TokenGeneration::Stub>> OpenStubs(const LoadgenConfig& config) {
  std::vector<std::unique_ptr<v1::TokenGeneration::Stub>> stubs;
  for (int i = 0; i < config.channels; ++i) {
    grpc::ChannelArguments arguments;
    // One TCP connection per channel: no subchannel sharing between them.
    arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    stubs.push_back(v1::TokenGeneration::NewStub(
        grpc::CreateCustomChannel(config.target, grpc::InsecureChannelCredentials(), arguments)));
  }
  return stubs;
}

// The driver loop's state; everything here belongs to the driver thread except what the
// calls touch: `finished_` (locked) and `tokens_received_` (atomic).
class Driver {
 public:
  Driver(const LoadgenConfig& config, const v1::ServerInfo& info, std::ostream* progress)
      : config_(config),
        progress_(progress),
        mix_(config, info.model()),
        stubs_(OpenStubs(config)),
        arrival_rng_(config.seed ^ 0x5deece66dull),
        parked_(kParkedRetry) {
    call_options_.deadline = config.deadline;
    call_options_.auth_token = config.auth_token;
    call_options_.vocab_size = info.model().vocab_size();
  }

  // Every time here is a MonotonicNow() reading.
  LoadgenResult Run() {
    start_ = MonotonicNow();
    const absl::Time send_end = config_.duration > absl::ZeroDuration() ? start_ + config_.duration
                                                                        : absl::InfiniteFuture();
    absl::Time next_arrival = start_ + NextGap();
    absl::Time next_progress = config_.progress_interval > absl::ZeroDuration()
                                   ? start_ + config_.progress_interval
                                   : absl::InfiniteFuture();
    last_progress_ = {start_, 0, 0};
    while (true) {
      const absl::Time now = MonotonicNow();
      const bool may_send = !CountBoundReached() && !stopped_sending_;
      const bool sending = may_send && now < send_end;
      if (sending && !config_.open_loop()) {
        parked_.ReleaseExpired(now, in_flight_);
        while (in_flight_ + parked_.size() < config_.concurrency && !CountBoundReached()) {
          Send(MonotonicNow());  // each request timed from its own send
        }
      } else if (may_send && config_.open_loop()) {
        // Arrivals due by now, none past the end of sending; a pass that comes late, after the
        // end, still takes every arrival due before it, so that each is sent or counted.
        while (next_arrival <= now && next_arrival < send_end && !CountBoundReached()) {
          if (in_flight_ < config_.max_in_flight) {
            // Read per arrival: a pass that sends many starts the later ones later.
            max_send_lag_ = std::max(max_send_lag_, MonotonicNow() - next_arrival);
            Send(next_arrival);
          } else {
            ++not_sent_;
          }
          next_arrival += NextGap();
        }
      }
      if (!sending && in_flight_ == 0) break;

      absl::Time wake = next_progress;
      if (sending) wake = std::min(wake, send_end);
      if (sending && in_flight_ == 0) wake = std::min(wake, parked_.NextRetry());
      if (sending && config_.open_loop()) wake = std::min(wake, next_arrival);
      for (const std::unique_ptr<StreamCall>& call : finished_.TakeAll(wake)) {
        --in_flight_;
        stats_.Record(call->outcome());
        unavailable_in_a_row_ =
            call->outcome().code == grpc::StatusCode::UNAVAILABLE ? unavailable_in_a_row_ + 1 : 0;
        if (!config_.open_loop()) {
          if (call->outcome().code == grpc::StatusCode::RESOURCE_EXHAUSTED) {
            parked_.Park(MonotonicNow());
          } else {
            parked_.RequestFinished();
          }
        }
        if (unavailable_in_a_row_ >= kServerLostAfterUnavailable) stopped_sending_ = true;
      }
      if (const absl::Time at = MonotonicNow(); at >= next_progress) {
        PrintProgress(sending);
        // After a stall of more than an interval, the next line comes an interval from now,
        // not at once with a rate over microseconds.
        next_progress =
            std::max(next_progress + config_.progress_interval, at + config_.progress_interval);
      }
    }
    LoadgenResult result = stats_.Summarize();
    result.wall_seconds = absl::ToDoubleSeconds(MonotonicNow() - start_);
    result.max_send_lag_ms = absl::ToDoubleMilliseconds(max_send_lag_);
    result.sent = sent_;
    result.not_sent = not_sent_;
    result.peak_in_flight = peak_in_flight_;
    result.stopped_sending = stopped_sending_;
    result.unavailable_at_end = unavailable_in_a_row_;
    return result;
  }

 private:
  struct ProgressMark {
    absl::Time time;
    int64_t finished;
    int64_t tokens;
  };

  bool CountBoundReached() const {
    return config_.num_requests > 0 && sent_ + not_sent_ >= config_.num_requests;
  }

  absl::Duration NextGap() {
    if (!config_.open_loop()) return absl::ZeroDuration();
    return absl::Seconds(std::exponential_distribution<double>(config_.rate)(arrival_rng_));
  }

  // Starts one request that was due at `due`.
  void Send(absl::Time due) {
    v1::TokenGeneration::Stub* stub = stubs_[sent_ % stubs_.size()].get();
    ++sent_;
    ++in_flight_;
    peak_in_flight_ = std::max(peak_in_flight_, in_flight_);
    StreamCall::Start(stub, mix_.Next(), call_options_, &tokens_received_, due,
                      [finished = &finished_](std::unique_ptr<StreamCall> call) {
                        finished->Push(std::move(call));
                      });
  }

  void PrintProgress(bool sending) {
    if (progress_ == nullptr) return;
    const absl::Time now = MonotonicNow();
    const int64_t tokens = tokens_received_.load(std::memory_order_relaxed);
    const double seconds = std::max(1e-9, absl::ToDoubleSeconds(now - last_progress_.time));
    *progress_ << absl::StrFormat(
                      "[%6.1f s] %s sent %d, ok %d, failed %d, in flight %d | %.1f finished/s, "
                      "%.0f tok/s",
                      absl::ToDoubleSeconds(now - start_), sending ? "sending " : "draining", sent_,
                      stats_.ok(), stats_.failed(), in_flight_,
                      (stats_.finished() - last_progress_.finished) / seconds,
                      (tokens - last_progress_.tokens) / seconds)
               << (config_.open_loop() && not_sent_ > 0
                       ? absl::StrFormat(" | %d not sent (max_in_flight)", not_sent_)
                       : "")
               << (stats_.first_bad_response().empty()
                       ? ""
                       : " | BAD RESPONSE: " + stats_.first_bad_response())
               << std::endl;
    last_progress_ = {now, stats_.finished(), tokens};
  }

  const LoadgenConfig config_;
  std::ostream* const progress_;
  RequestMix mix_;
  std::vector<std::unique_ptr<v1::TokenGeneration::Stub>> stubs_;
  StreamCallOptions call_options_;
  std::mt19937_64 arrival_rng_;
  FinishedCalls finished_;
  std::atomic<int64_t> tokens_received_{0};  // written by the calls' callbacks
  LoadStats stats_;
  absl::Time start_;
  ProgressMark last_progress_;
  int64_t sent_ = 0;
  int64_t not_sent_ = 0;
  int32_t in_flight_ = 0;
  int32_t peak_in_flight_ = 0;
  int32_t unavailable_in_a_row_ = 0;  // requests ending UNAVAILABLE since the last other end
  ParkedStreams parked_;              // closed loop: the streams waiting for room after a refusal
  absl::Duration max_send_lag_;       // open loop: the latest an arrival was sent
  bool stopped_sending_ = false;      // kServerLostAfterUnavailable of them: stop sending
};

}  // namespace

LoadgenResult RunLoad(const LoadgenConfig& config, const v1::ServerInfo& info,
                      std::ostream* progress) {
  Driver driver(config, info, progress);
  return driver.Run();
}

}  // namespace int4kv
