#include "backend/float64_attention.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <thread>
#include <vector>

namespace int4kv {
namespace {

struct HeadSums {
  double error = 0;  // sum of squared differences
  double norm = 0;   // sum of squared reference values
};

HeadSums OneHead(absl::Span<const float> kv, const Float64AttentionShape& shape, int h,
                 const float* q, const float* out) {
  const int d_count = shape.head_dim;
  const size_t token_floats = static_cast<size_t>(2) * shape.kv_heads * d_count;
  const size_t tokens = kv.size() / token_floats;
  const int kv_head = h / (shape.q_heads / shape.kv_heads);
  const float* q_row = q + static_cast<size_t>(h) * d_count;
  std::vector<double> weight(tokens);
  double max_score = -std::numeric_limits<double>::infinity();
  for (size_t t = 0; t < tokens; ++t) {
    const float* k = &kv[t * token_floats + static_cast<size_t>(kv_head) * d_count];
    double dot = 0;
    for (int d = 0; d < d_count; ++d) dot += double{q_row[d]} * k[d];
    weight[t] = dot / std::sqrt(static_cast<double>(d_count));
    if (const double cap = shape.logit_soft_cap; cap != 0)
      weight[t] = cap * std::tanh(weight[t] / cap);
    max_score = std::max(max_score, weight[t]);
  }
  double sum = 0;
  for (double& w : weight) sum += (w = std::exp(w - max_score));
  std::vector<double> ref(d_count, 0.0);
  for (size_t t = 0; t < tokens; ++t) {
    const float* v =
        &kv[t * token_floats + static_cast<size_t>(shape.kv_heads + kv_head) * d_count];
    for (int d = 0; d < d_count; ++d) ref[d] += weight[t] * v[d];
  }
  HeadSums sums;
  for (int d = 0; d < d_count; ++d) {
    const double r = ref[d] / sum;
    const double diff = out[static_cast<size_t>(h) * d_count + d] - r;
    sums.error += diff * diff;
    sums.norm += r * r;
  }
  return sums;
}

}  // namespace

double RowErrorAgainstFloat64(absl::Span<const float> kv, const Float64AttentionShape& shape,
                              const float* q, const float* out, int threads) {
  std::vector<HeadSums> heads(shape.q_heads);
  const int workers = std::clamp(threads, 1, shape.q_heads);
  std::vector<std::thread> pool;
  for (int w = 1; w < workers; ++w) {
    pool.emplace_back([&, w] {
      for (int h = w; h < shape.q_heads; h += workers) heads[h] = OneHead(kv, shape, h, q, out);
    });
  }
  for (int h = 0; h < shape.q_heads; h += workers) heads[h] = OneHead(kv, shape, h, q, out);
  for (std::thread& t : pool) t.join();
  double error = 0, norm = 0;
  for (const HeadSums& s : heads) error += s.error, norm += s.norm;  // fixed order
  return std::sqrt(error / norm);
}

}  // namespace int4kv
