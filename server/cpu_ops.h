// The CPU math layer of the Llama forward pass: float32, row-major, threaded over output
// features with common/thread_pool.h. Each output element is computed by one thread in a
// fixed order that does not depend on the batch size or the thread count, so a token's
// activations are bit-identical whatever else is in its batch (greedy outputs do not depend
// on batch composition).
//
// A GPU model replaces these with cuBLAS GEMMs and small kernels behind the same Model
// interface (server/model.h); nothing above the model calls them.
#ifndef INT4KV_SERVER_CPU_OPS_H_
#define INT4KV_SERVER_CPU_OPS_H_

#include <cstdint>

#include "common/thread_pool.h"

namespace int4kv {

// sum_i a[i] * b[i] in a fixed order (8 interleaved partial sums, then a fixed tree).
float Dot(const float* a, const float* b, int64_t n);

// y[r][o] = sum_i x[r][i] * w[o][i]:  x [rows][in], w [out][in], y [rows][out].
void MatMul(ThreadPool& pool, const float* x, int64_t rows, const float* w, int64_t out_features,
            int64_t in_features, float* y);

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight:  x, out [rows][dim], weight [dim].
// out may alias x.
void RmsNorm(const float* x, const float* weight, int64_t rows, int64_t dim, float eps, float* out);

// Rotates pairs (2i, 2i + 1) of every head of x [rows][heads][head_dim] in place by the
// angle position[r] * theta^(-2i / head_dim).
void ApplyRope(float* x, const int32_t* positions, int64_t rows, int32_t heads, int32_t head_dim,
               float theta);

// gate[i] = silu(gate[i]) * up[i] for i in [0, n).
void SwiGlu(float* gate, const float* up, int64_t n);

// x[i] += y[i] for i in [0, n).
void AddInPlace(float* x, const float* y, int64_t n);

}  // namespace int4kv

#endif  // INT4KV_SERVER_CPU_OPS_H_
