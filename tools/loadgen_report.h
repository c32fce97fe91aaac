// The load generator's results and their two renderings: a text report for people and a JSON
// document for scripts (--json).
#ifndef INT4KV_TOOLS_LOADGEN_REPORT_H_
#define INT4KV_TOOLS_LOADGEN_REPORT_H_

#include <cstdint>
#include <map>
#include <string>

#include "proto/generation.pb.h"
#include "tools/latency_stats.h"
#include "tools/loadgen_config.h"

namespace int4kv {

struct LoadgenResult {
  // From the start of sending (in an open loop, the first arrival comes one random gap later)
  // to the later of the last request's end and the end of sending: an open loop sends until
  // --duration ends, so its wall time is at least --duration however early its last request
  // ends, and requests_per_s is over the whole sending window.
  double wall_seconds = 0;
  int64_t sent = 0;           // requests started
  int64_t ok = 0;             // finished with status OK
  int64_t failed = 0;         // finished with any other status
  int64_t not_sent = 0;       // open loop: arrivals dropped at max_in_flight open streams
  int64_t output_tokens = 0;  // token ids received by OK requests (failed ones' are not counted)
  // OK requests whose stream broke the API's promises: no finish reason, usage disagreeing
  // with the tokens received, more tokens than max_new_tokens, LENGTH with fewer, an id
  // outside the vocabulary.
  int64_t bad_responses = 0;
  int32_t peak_in_flight = 0;
  // Open loop: the longest an arrival waited for the sender to start it (its latencies count
  // from the arrival, so this wait is in them).
  double max_send_lag_ms = 0;
  // Sending stopped early: kServerLostAfterUnavailable requests in a row ended UNAVAILABLE.
  bool stopped_sending = false;
  // Requests that ended last, all UNAVAILABLE (0 if the last one to end did not): a run that
  // ends on such a streak lost its server too, even one too short to stop sending.
  int64_t unavailable_at_end = 0;
  // The server stopped answering: sending stopped early, or the run ended on such a streak.
  bool server_lost() const { return stopped_sending || unavailable_at_end > 0; }
  LatencySummary time_to_first_token;                 // OK requests that got a token
  LatencySummary inter_token;                         // every token after the first, OK requests
  LatencySummary end_to_end;                          // OK requests, start to status
  // (Latencies start when a request was due: its arrival in an open loop, its send in a closed
  // one.)
  std::map<std::string, int64_t> errors_by_code;      // "RESOURCE_EXHAUSTED" -> count
  std::map<std::string, std::string> error_examples;  // code -> its first message

  double requests_per_second() const { return wall_seconds > 0 ? ok / wall_seconds : 0; }
  double output_tokens_per_second() const {
    return wall_seconds > 0 ? output_tokens / wall_seconds : 0;
  }
};

std::string FormatTextReport(const LoadgenConfig& config, const v1::ServerInfo& info,
                             const LoadgenResult& result);

// One JSON object: {"config": {...}, "server": {...}, "results": {...}}; latencies in ms.
std::string FormatJsonReport(const LoadgenConfig& config, const v1::ServerInfo& info,
                             const LoadgenResult& result);

}  // namespace int4kv

#endif  // INT4KV_TOOLS_LOADGEN_REPORT_H_
