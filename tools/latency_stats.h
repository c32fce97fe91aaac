// Latency samples and their summary (count, mean, p50/p90/p99, max) for the load generator.
// Percentiles use the nearest-rank method over every sample kept: p is the smallest sample
// with at least p% of the samples at or below it.
//
// Thread ownership: not thread-safe; the load generator's driver thread owns every instance.
#ifndef INT4KV_TOOLS_LATENCY_STATS_H_
#define INT4KV_TOOLS_LATENCY_STATS_H_

#include <cstdint>
#include <vector>

namespace int4kv {

struct LatencySummary {
  int64_t count = 0;
  // Milliseconds; all 0 when count is 0.
  double mean_ms = 0;
  double p50_ms = 0;
  double p90_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
};

class LatencySamples {
 public:
  void Add(double ms) { samples_.push_back(ms); }
  int64_t count() const { return static_cast<int64_t>(samples_.size()); }
  // Sorts the samples in place, without a copy: a long run keeps one inter-token sample per
  // token, hundreds of millions of them.
  LatencySummary Summarize();

 private:
  std::vector<double> samples_;  // milliseconds, in arrival order until Summarize sorts them
};

// The nearest-rank percentile `p` in (0, 100] of samples sorted ascending; 0 if empty.
double NearestRankPercentile(const std::vector<double>& sorted, double p);

}  // namespace int4kv

#endif  // INT4KV_TOOLS_LATENCY_STATS_H_
