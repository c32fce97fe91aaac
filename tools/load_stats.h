// Folds finished calls into the load generator's counters, latency samples and error counts,
// and checks every OK stream against the API's promises (see LoadgenResult::bad_responses).
//
// Thread ownership: not thread-safe; the driver thread owns it.
#ifndef INT4KV_TOOLS_LOAD_STATS_H_
#define INT4KV_TOOLS_LOAD_STATS_H_

#include <cstdint>

#include "tools/latency_stats.h"
#include "tools/loadgen_report.h"
#include "tools/stream_call.h"

namespace int4kv {

// Empty if `outcome` (status OK) kept the API's promises, else what it broke.
std::string CheckOkOutcome(const CallOutcome& outcome);

class LoadStats {
 public:
  void Record(const CallOutcome& outcome);

  int64_t ok() const { return result_.ok; }
  int64_t failed() const { return result_.failed; }
  int64_t finished() const { return result_.ok + result_.failed; }
  // The first broken promise seen (empty if none), for the progress output.
  const std::string& first_bad_response() const { return first_bad_response_; }

  // The result with the latency summaries; the caller fills in what only it knows (wall
  // time, sent, not sent, peak in flight). Sorts the samples in place (LatencySamples).
  LoadgenResult Summarize();

 private:
  LoadgenResult result_;
  LatencySamples ttft_;
  LatencySamples itl_;
  LatencySamples e2e_;
  std::string first_bad_response_;
};

}  // namespace int4kv

#endif  // INT4KV_TOOLS_LOAD_STATS_H_
