// Per-request token sampling: greedy, temperature, top-k, top-p, with a per-request random
// stream so the same seed and logits give the same tokens whatever else is in the batch.
//
// Thread ownership: a Sampler belongs to one request and is used by the engine's scheduler
// thread.
#ifndef INT4KV_SERVER_SAMPLER_H_
#define INT4KV_SERVER_SAMPLER_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/optional.h"
#include "absl/types/span.h"

namespace int4kv {

constexpr float kMaxTemperature = 100.0f;

struct SamplingParams {
  float temperature = 0.0f;       // 0: greedy (argmax); otherwise in (0, kMaxTemperature]
  int32_t top_k = 0;              // 0: off; otherwise keep the k most likely tokens
  float top_p = 1.0f;             // in (0, 1]; keep the smallest set with probability >= top_p
  absl::optional<uint64_t> seed;  // unset: the engine picks one at submit
};

// OK, or InvalidArgument naming the field and its allowed range.
absl::Status ValidateSamplingParams(const SamplingParams& params);

// xoshiro256** seeded through SplitMix64: a small, portable generator whose output is the
// same on every platform and standard library.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t Next();
  double Uniform();  // in [0, 1), 53 random bits

 private:
  uint64_t state_[4];
};

class Sampler {
 public:
  // params must be valid.
  Sampler(const SamplingParams& params, uint64_t seed);

  // A token id in [0, logits.size()), or -1 when every logit is NaN (a broken forward pass:
  // there is no token to take). Greedy picks the largest logit (lowest id on ties), as does
  // top_k == 1; otherwise the distribution softmax(logits / temperature) is cut to the top_k
  // tokens, then to the top_p nucleus, renormalized and sampled with one Uniform() draw. A NaN
  // logit ranks as -inf; when the largest logit is +inf, or none is above -inf, the token is
  // ArgMax's.
  int32_t Sample(absl::Span<const float> logits);

 private:
  SamplingParams params_;
  Rng rng_;
  std::vector<std::pair<float, int32_t>> candidates_;  // scratch: (logit, token)
  std::vector<double> probs_;                          // scratch
};

// The index of the largest value, lowest index on ties; NaN never wins, and values that are all
// NaN give -1.
int32_t ArgMax(absl::Span<const float> values);

}  // namespace int4kv

#endif  // INT4KV_SERVER_SAMPLER_H_
