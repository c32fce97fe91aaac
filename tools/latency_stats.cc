#include "tools/latency_stats.h"

#include <algorithm>
#include <cmath>

namespace int4kv {

double NearestRankPercentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const double rank = std::ceil(p / 100.0 * static_cast<double>(sorted.size()));
  const size_t index = static_cast<size_t>(std::max(1.0, rank)) - 1;
  return sorted[std::min(index, sorted.size() - 1)];
}

void LatencySamples::Add(double ms) {
  max_ms_ = count_ == 0 ? ms : std::max(max_ms_, ms);
  sum_ms_ += ms;
  ++count_;
  if (static_cast<int64_t>(samples_.size()) < capacity_) {
    samples_.push_back(ms);
    return;
  }
  // The count_-th sample replaces a kept one with probability capacity_ / count_, so that every
  // sample so far is kept with the same probability.
  const int64_t slot = std::uniform_int_distribution<int64_t>(0, count_ - 1)(rng_);
  if (slot < capacity_) samples_[static_cast<size_t>(slot)] = ms;
}

LatencySummary LatencySamples::Summarize() {
  LatencySummary summary;
  summary.count = count_;
  if (count_ == 0) return summary;
  std::sort(samples_.begin(), samples_.end());
  summary.mean_ms = sum_ms_ / static_cast<double>(count_);
  summary.p50_ms = NearestRankPercentile(samples_, 50);
  summary.p90_ms = NearestRankPercentile(samples_, 90);
  summary.p99_ms = NearestRankPercentile(samples_, 99);
  summary.max_ms = max_ms_;
  summary.percentile_samples = static_cast<int64_t>(samples_.size());
  return summary;
}

}  // namespace int4kv
