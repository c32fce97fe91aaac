// Latency samples and their summary (count, mean, p50/p90/p99, max) for the load generator.
// Percentiles use the nearest-rank method over the samples kept: p is the smallest kept sample
// with at least p% of them at or below it. The first `capacity` samples are all kept (exact
// percentiles); past that, a uniform random sample of `capacity` of them (reservoir sampling),
// so that a long run's memory stays bounded (one inter-token sample a token: at 85,000 tokens
// a second, 2.4 GB an hour if every one were kept). Count, mean and max are always exact.
//
// Thread ownership: not thread-safe; the load generator's driver thread owns every instance.
#ifndef INT4KV_TOOLS_LATENCY_STATS_H_
#define INT4KV_TOOLS_LATENCY_STATS_H_

#include <cstdint>
#include <random>
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
  // The samples the percentiles come from: count, or the reservoir's capacity when fewer.
  int64_t percentile_samples = 0;
};

// Samples kept for exact percentiles before reservoir sampling begins: 32 MiB of doubles.
inline constexpr int64_t kLatencySamplesKept = int64_t{1} << 22;

class LatencySamples {
 public:
  explicit LatencySamples(int64_t capacity = kLatencySamplesKept) : capacity_(capacity) {}
  void Add(double ms);
  int64_t count() const { return count_; }
  // Sorts the kept samples in place, without a copy.
  LatencySummary Summarize();

 private:
  const int64_t capacity_;           // >= 1
  std::vector<double> samples_;      // milliseconds, at most capacity_ of them
  std::mt19937_64 rng_{0x1a7e5ull};  // picks which samples the reservoir keeps
  int64_t count_ = 0;                // every sample added
  double sum_ms_ = 0;
  double max_ms_ = 0;
};

// The nearest-rank percentile `p` in (0, 100] of samples sorted ascending; 0 if empty.
double NearestRankPercentile(const std::vector<double>& sorted, double p);

}  // namespace int4kv

#endif  // INT4KV_TOOLS_LATENCY_STATS_H_
