// What the load generator runs: the traffic shape (closed or open loop), its bounds, the
// request mix, and the checks of that configuration on its own and against the server's limits
// (GetServerInfo), each naming the flag and the limit.
#ifndef INT4KV_TOOLS_LOADGEN_CONFIG_H_
#define INT4KV_TOOLS_LOADGEN_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "proto/generation.pb.h"
#include "tools/length_distribution.h"

namespace int4kv {

constexpr int32_t kMaxLoadgenStreams = 4096;
constexpr int32_t kMaxLoadgenChannels = 64;
// Open-loop arrivals per second at most: far beyond any server here, and small enough that
// the gaps between arrivals stay well above the clock's resolution.
constexpr double kMaxLoadgenRate = 1e6;
// The slowest open loop: one arrival in 1000 s on average.
constexpr double kMinLoadgenRate = 1e-3;
// Sending stops once this many requests in a row end UNAVAILABLE: the server has gone away
// or is shutting down (LoadgenResult::stopped_sending).
constexpr int32_t kServerLostAfterUnavailable = 256;

struct LoadgenConfig {
  std::string target;  // a loopback gRPC target (ParseLoopbackTarget)

  // Closed loop (rate == 0): `concurrency` streams are kept open; each finished request is
  // replaced at once, except one the server refused with RESOURCE_EXHAUSTED: its stream waits
  // until another request finishes (or 100 ms while none is in flight). Open loop (rate > 0):
  // requests arrive as a Poisson process of `rate` per second, independent of the server's
  // progress; an arrival that finds `max_in_flight` streams open is not sent and counted as such
  // (the server is not keeping up).
  int32_t concurrency = 16;
  double rate = 0;
  int32_t max_in_flight = 1024;

  // Bounds: sending stops after `num_requests` requests (arrivals, in open loop) or after
  // `duration`, whichever comes first (0: no bound; at least one must be set). Requests in
  // flight then run to their end.
  int64_t num_requests = 0;
  absl::Duration duration = absl::Seconds(30);

  // Each request: a prompt of prompt_len tokens (the model's BOS, then uniformly random ids
  // in [0, vocab_size)) and max_new_tokens drawn from output_len.
  LengthDistribution prompt_len = {32, 32};
  LengthDistribution output_len = {64, 64};
  float temperature = 0;   // 0: greedy
  bool ignore_eos = true;  // true: every request generates exactly max_new_tokens tokens
  uint64_t seed = 1;       // of the request mix (lengths, prompt ids, sampling seeds)

  int32_t channels = 4;  // gRPC connections; streams are spread over them round-robin
  absl::Duration deadline = absl::Seconds(300);         // per request
  absl::Duration connect_timeout = absl::Seconds(10);   // for the first GetServerInfo
  std::string auth_token;                               // sent as "authorization: Bearer <token>"
  absl::Duration progress_interval = absl::Seconds(1);  // 0: no progress lines

  bool open_loop() const { return rate > 0; }
};

// InvalidArgument naming the first bad flag and its allowed range.
absl::Status ValidateConfig(const LoadgenConfig& config);

// InvalidArgument if the request mix can produce a request the server would reject: lengths
// above its max_new_tokens limit, max_seq_len or KV capacity.
absl::Status CheckAgainstServer(const LoadgenConfig& config, const v1::ServerInfo& info);

// A warning (empty if none) when more streams can be open at once (--concurrency, or
// --max_in_flight in open loop) than the server takes (max_batch + max_queue): the rest are
// refused with RESOURCE_EXHAUSTED, and in closed loop their streams wait for another request
// to finish before sending again; the refusals cost the server time that the figures include.
std::string OverloadWarning(const LoadgenConfig& config, const v1::ServerInfo& info);

}  // namespace int4kv

#endif  // INT4KV_TOOLS_LOADGEN_CONFIG_H_
