#include "server/cpu_ops.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace int4kv {
namespace {

std::vector<float> RandomVector(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

TEST(CpuOpsTest, MatMulMatchesFloat64) {
  ThreadPool pool(2);
  const int rows = 5, in = 37, out = 50;  // not multiples of the 8-lane or 16-row blocks
  const std::vector<float> x = RandomVector(rows * in, 1), w = RandomVector(out * in, 2);
  std::vector<float> y(rows * out, NAN);
  MatMul(pool, x.data(), rows, w.data(), out, in, y.data());
  for (int r = 0; r < rows; ++r) {
    for (int o = 0; o < out; ++o) {
      double expected = 0;
      for (int i = 0; i < in; ++i) expected += double{x[r * in + i]} * w[o * in + i];
      EXPECT_NEAR(y[r * out + o], expected, 1e-4) << r << "," << o;
    }
  }
}

// Each output row is bit-identical whether computed alone or in a batch, with any thread count:
// the property behind batching invariance of the engine.
TEST(CpuOpsTest, MatMulRowsDoNotDependOnBatch) {
  ThreadPool one(1), two(2);
  const int rows = 9, in = 64, out = 172;
  const std::vector<float> x = RandomVector(rows * in, 3), w = RandomVector(out * in, 4);
  std::vector<float> batch(rows * out), single(out);
  MatMul(two, x.data(), rows, w.data(), out, in, batch.data());
  for (int r = 0; r < rows; ++r) {
    MatMul(one, x.data() + r * in, 1, w.data(), out, in, single.data());
    for (int o = 0; o < out; ++o) ASSERT_EQ(batch[r * out + o], single[o]);
  }
}

TEST(CpuOpsTest, RmsNorm) {
  const std::vector<float> x = {1, -2, 3, -4, 0, 2, 0, 0};  // two rows of 4
  const std::vector<float> weight = {1, 2, 1, 0.5f};
  std::vector<float> out(8);
  RmsNorm(x.data(), weight.data(), 2, 4, 1e-5f, out.data());
  const float inv0 = 1.0f / std::sqrt((1 + 4 + 9 + 16) / 4.0f + 1e-5f);
  EXPECT_NEAR(out[1], -2 * inv0 * 2, 1e-6);
  EXPECT_NEAR(out[3], -4 * inv0 * 0.5f, 1e-6);
  const float inv1 = 1.0f / std::sqrt(4 / 4.0f + 1e-5f);
  EXPECT_NEAR(out[5], 2 * inv1 * 2, 1e-6);
  EXPECT_EQ(out[4], 0.0f);
}

TEST(CpuOpsTest, RopeRotatesPairs) {
  // Two rows (positions 0 and 3), one head of dim 4.
  std::vector<float> x = {1, 2, 3, 4, 1, 0, 0, 1};
  const int32_t positions[] = {0, 3};
  ApplyRope(x.data(), positions, 2, 1, 4, 10000.0f);
  EXPECT_FLOAT_EQ(x[0], 1);  // position 0: identity
  EXPECT_FLOAT_EQ(x[3], 4);
  // Pair 0 turns by 3 rad, pair 1 by 3 / 100 rad (theta^(-2/4) = 1/100).
  EXPECT_NEAR(x[4], std::cos(3.0), 1e-6);
  EXPECT_NEAR(x[5], std::sin(3.0), 1e-6);
  EXPECT_NEAR(x[6], -std::sin(0.03), 1e-6);
  EXPECT_NEAR(x[7], std::cos(0.03), 1e-6);
}

TEST(CpuOpsTest, SwiGluAndAdd) {
  std::vector<float> gate = {0, 1, -2}, up = {5, 2, 3};
  SwiGlu(gate.data(), up.data(), 3);
  EXPECT_FLOAT_EQ(gate[0], 0);
  EXPECT_NEAR(gate[1], 1 / (1 + std::exp(-1.0)) * 2, 1e-6);
  EXPECT_NEAR(gate[2], -2 / (1 + std::exp(2.0)) * 3, 1e-6);
  std::vector<float> a = {1, 2}, b = {3, -5};
  AddInPlace(a.data(), b.data(), 2);
  EXPECT_EQ(a, (std::vector<float>{4, -3}));
}

}  // namespace
}  // namespace int4kv
