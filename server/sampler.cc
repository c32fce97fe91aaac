#include "server/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/exact_number.h"

namespace int4kv {
namespace {

uint64_t SplitMix64(uint64_t* x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t RotateLeft(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& params) {
  if (!(params.temperature >= 0.0f && params.temperature <= kMaxTemperature)) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature = ", ExactNumber(params.temperature),
                     " is invalid: must be in [0, ", kMaxTemperature, "] (0 means greedy)"));
  }
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_p = ", ExactNumber(params.top_p), " is invalid: must be in (0, 1]"));
  }
  if (params.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k = ", params.top_k, " is invalid: must be >= 0 (0 means no limit)"));
  }
  return absl::OkStatus();
}

Rng::Rng(uint64_t seed) {
  uint64_t x = seed;
  for (uint64_t& word : state_) word = SplitMix64(&x);
}

uint64_t Rng::Next() {
  const uint64_t result = RotateLeft(state_[1] * 5, 7) * 9;
  const uint64_t t = state_[1] << 17;
  state_[2] ^= state_[0];
  state_[3] ^= state_[1];
  state_[1] ^= state_[2];
  state_[0] ^= state_[3];
  state_[2] ^= t;
  state_[3] = RotateLeft(state_[3], 45);
  return result;
}

double Rng::Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

int32_t ArgMax(absl::Span<const float> values) {
  int32_t best = 0;
  for (size_t i = 1; i < values.size(); ++i) {
    if (values[i] > values[best] || std::isnan(values[best])) best = static_cast<int32_t>(i);
  }
  return std::isnan(values[best]) ? -1 : best;
}

Sampler::Sampler(const SamplingParams& params, uint64_t seed) : params_(params), rng_(seed) {}

int32_t Sampler::Sample(absl::Span<const float> logits) {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  if (params_.temperature == 0.0f || params_.top_k == 1 || vocab == 1) return ArgMax(logits);

  candidates_.clear();
  // NaN ranks as -inf, so that the ordering below is a strict weak order (NaN would make the
  // sorts undefined) and a NaN logit is never drawn.
  for (int32_t i = 0; i < vocab; ++i) {
    candidates_.emplace_back(std::isnan(logits[i]) ? -INFINITY : logits[i], i);
  }
  // Most likely first; ties keep the lower id first so the order is fully determined.
  auto more_likely = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  // candidates_[0, sorted) holds the most likely candidates in order.
  size_t sorted = 0;
  if (params_.top_k > 0 && params_.top_k < vocab) {
    std::partial_sort(candidates_.begin(), candidates_.begin() + params_.top_k, candidates_.end(),
                      more_likely);
    candidates_.resize(params_.top_k);
    sorted = candidates_.size();
  }

  // Softmax over the kept candidates, in double.
  float max_logit = -INFINITY;
  for (const auto& c : candidates_) max_logit = std::max(max_logit, c.first);
  // An infinite logit (or none above -inf) leaves no softmax to draw from: the most likely
  // token, as greedy would take it.
  if (!std::isfinite(max_logit)) return ArgMax(logits);
  const double temperature = params_.temperature;
  auto weight = [max_logit, temperature](const std::pair<float, int32_t>& c) {
    return std::exp((static_cast<double>(c.first) - max_logit) / temperature);
  };
  size_t count = candidates_.size();
  if (params_.top_p >= 1.0f) {
    probs_.resize(count);
    for (size_t i = 0; i < count; ++i) probs_[i] = weight(candidates_[i]);
  } else {
    double total = 0.0;
    for (const auto& c : candidates_) total += weight(c);
    // The shortest most-likely-first prefix whose mass reaches top_p. A nucleus is usually a
    // small part of the vocabulary, so the order is built for a prefix that grows 8x at a
    // time until it holds the nucleus (a full sort of 128K entries took about 14 ms a token).
    for (size_t prefix = 64;; prefix *= 8) {
      if (sorted < candidates_.size()) {
        sorted = std::min(prefix, candidates_.size());
        // Selection, then a sort of the selected: linear in the vocabulary, where a heap-based
        // partial_sort costs log(prefix) a candidate.
        std::nth_element(candidates_.begin(), candidates_.begin() + sorted, candidates_.end(),
                         more_likely);
        std::sort(candidates_.begin(), candidates_.begin() + sorted, more_likely);
      }
      double mass = 0.0;
      size_t i = 0;
      for (; i < sorted && mass < params_.top_p; ++i) mass += weight(candidates_[i]) / total;
      if (mass >= params_.top_p || sorted == candidates_.size()) {
        count = i;
        break;
      }
    }
    probs_.resize(count);
    for (size_t i = 0; i < count; ++i) probs_[i] = weight(candidates_[i]);
  }
  const double total = std::accumulate(probs_.begin(), probs_.end(), 0.0);
  const double target = rng_.Uniform() * total;
  double cumulative = 0.0;
  for (size_t i = 0; i < count; ++i) {
    cumulative += probs_[i];
    if (target < cumulative) return candidates_[i].second;
  }
  return candidates_[count - 1].second;  // rounding left target at the very top
}

}  // namespace int4kv
