#include "server/cpu_ops.h"

#include <algorithm>
#include <cmath>

namespace int4kv {

float Dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

void MatMul(ThreadPool& pool, const float* x, int64_t rows, const float* w, int64_t out_features,
            int64_t in_features, float* y) {
  // Work item: a block of output features for every row, so each weight row is read from
  // memory once a call and reused from cache across the batch.
  constexpr int64_t kBlock = 16;
  const int64_t blocks = (out_features + kBlock - 1) / kBlock;
  pool.ParallelFor(blocks, [&](int64_t block) {
    const int64_t end = std::min(out_features, (block + 1) * kBlock);
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * in_features;
      float* yr = y + r * out_features;
      for (int64_t o = block * kBlock; o < end; ++o)
        yr[o] = Dot(xr, w + o * in_features, in_features);
    }
  });
}

void RmsNorm(const float* x, const float* weight, int64_t rows, int64_t dim, float eps,
             float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* outr = out + r * dim;
    const float mean_square = Dot(xr, xr, dim) / static_cast<float>(dim);
    const float inv = 1.0f / std::sqrt(mean_square + eps);
    for (int64_t i = 0; i < dim; ++i) outr[i] = xr[i] * inv * weight[i];
  }
}

void ApplyRope(float* x, const int32_t* positions, int64_t rows, int32_t heads, int32_t head_dim,
               float theta) {
  for (int64_t r = 0; r < rows; ++r) {
    const float position = static_cast<float>(positions[r]);
    for (int32_t i = 0; i < head_dim; i += 2) {
      const float frequency =
          1.0f / std::pow(theta, static_cast<float>(i) / static_cast<float>(head_dim));
      const float angle = position * frequency;
      const float c = std::cos(angle), s = std::sin(angle);
      for (int32_t h = 0; h < heads; ++h) {
        float* pair = x + (r * heads + h) * head_dim + i;
        const float a = pair[0], b = pair[1];
        pair[0] = a * c - b * s;
        pair[1] = a * s + b * c;
      }
    }
  }
}

void SwiGlu(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void AddInPlace(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

}  // namespace int4kv
