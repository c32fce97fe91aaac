// Decode attention for one row in float64 over dequantized K/V: the reference that
// embed_example and decode_bench hold the backend's outputs to.
#ifndef INT4KV_BACKEND_FLOAT64_ATTENTION_H_
#define INT4KV_BACKEND_FLOAT64_ATTENTION_H_

#include "absl/types/span.h"

namespace int4kv {

struct Float64AttentionShape {
  int q_heads;
  int kv_heads;  // divides q_heads: query head h reads KV head h / (q_heads / kv_heads)
  int head_dim;
  double logit_soft_cap = 0;  // AttentionShape.logit_soft_cap: 0, or scores capped at c tanh(s / c)
};

// ||out - ref|| / ||ref|| over one row, ref = softmax(q k / sqrt(head_dim)) v per query head
// (its scores soft-capped where the shape says so), computed in float64.
//   kv:  [tokens][2 * kv_heads][head_dim] float32, each token's K heads then its V heads, as
//        DequantizeHost and DequantizeCuda write them.
//   q, out: [q_heads][head_dim] float32.
// `threads` > 1 spreads the query heads over that many threads (the result is the same).
double RowErrorAgainstFloat64(absl::Span<const float> kv, const Float64AttentionShape& shape,
                              const float* q, const float* out, int threads = 1);

}  // namespace int4kv

#endif  // INT4KV_BACKEND_FLOAT64_ATTENTION_H_
