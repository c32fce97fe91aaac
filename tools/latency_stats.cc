#include "tools/latency_stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace int4kv {

double NearestRankPercentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const double rank = std::ceil(p / 100.0 * static_cast<double>(sorted.size()));
  const size_t index = static_cast<size_t>(std::max(1.0, rank)) - 1;
  return sorted[std::min(index, sorted.size() - 1)];
}

LatencySummary LatencySamples::Summarize() {
  LatencySummary summary;
  summary.count = count();
  if (samples_.empty()) return summary;
  std::sort(samples_.begin(), samples_.end());
  const std::vector<double>& sorted = samples_;
  summary.mean_ms = std::accumulate(sorted.begin(), sorted.end(), 0.0) / sorted.size();
  summary.p50_ms = NearestRankPercentile(sorted, 50);
  summary.p90_ms = NearestRankPercentile(sorted, 90);
  summary.p99_ms = NearestRankPercentile(sorted, 99);
  summary.max_ms = sorted.back();
  return summary;
}

}  // namespace int4kv
