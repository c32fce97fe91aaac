// RowErrorAgainstFloat64: known answers, and the same result on any number of threads.
#include "backend/float64_attention.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace int4kv {
namespace {

// With one token every query head's softmax weight is 1, so the reference is that token's V
// head: an output equal to it has error 0, one twice it error 1.
TEST(Float64AttentionTest, OneTokenRefersToItsValues) {
  const Float64AttentionShape shape{4, 2, 3};  // query heads 0, 1 read KV head 0; 2, 3 head 1
  // [1 token][K heads 0, 1; V heads 0, 1][3]
  const std::vector<float> kv = {0.5f, -1, 2, 1, 1, 1, 3, -4, 0.25f, -2, 6, 1};
  const std::vector<float> q(12, 0.7f);
  std::vector<float> out = {3, -4, 0.25f, 3, -4, 0.25f, -2, 6, 1, -2, 6, 1};
  EXPECT_EQ(RowErrorAgainstFloat64(kv, shape, q.data(), out.data()), 0.0);
  for (float& x : out) x *= 2;
  EXPECT_DOUBLE_EQ(RowErrorAgainstFloat64(kv, shape, q.data(), out.data()), 1.0);
}

// Spreading the query heads over threads changes nothing: each head is computed once and the
// sums are added in a fixed order. An output wrong in one head only is seen on any count.
TEST(Float64AttentionTest, AnyThreadCountGivesTheSameError) {
  const Float64AttentionShape shape{8, 2, 16};
  const int tokens = 37;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  std::vector<float> kv(static_cast<size_t>(tokens) * 2 * shape.kv_heads * shape.head_dim);
  std::vector<float> q(shape.q_heads * shape.head_dim), out(q.size());
  for (float& x : kv) x = normal(rng);
  for (float& x : q) x = normal(rng);
  for (float& x : out) x = normal(rng);
  const double one = RowErrorAgainstFloat64(kv, shape, q.data(), out.data(), 1);
  ASSERT_TRUE(std::isfinite(one));
  for (int threads : {2, 3, 5, 8, 64}) {
    EXPECT_EQ(RowErrorAgainstFloat64(kv, shape, q.data(), out.data(), threads), one) << threads;
  }
  // An output moved in head h alone raises the error, by the same amount on any count.
  for (int h = 0; h < shape.q_heads; ++h) {
    std::vector<float> moved = out;
    moved[static_cast<size_t>(h) * shape.head_dim] += 100;
    const double alone = RowErrorAgainstFloat64(kv, shape, q.data(), moved.data(), 1);
    EXPECT_GT(alone, one) << "head " << h;
    EXPECT_EQ(RowErrorAgainstFloat64(kv, shape, q.data(), moved.data(), 3), alone) << "head " << h;
  }
}

// Two tokens whose scores are 4 and 0: uncapped, weights e^4 : 1; capped at 2, the first
// score is 2 tanh(2), so weights e^(2 tanh 2) : 1. Each output is exact for its own shape only.
TEST(Float64AttentionTest, SoftCapFlattensTheWeights) {
  // One query head over one KV head of head_dim 1: [token][K, V].
  const std::vector<float> kv = {4, 1, 0, 0};  // token 0: K 4, V 1; token 1: K 0, V 0
  const std::vector<float> q = {1};
  auto out_for = [](double score) {
    const double w = std::exp(score);
    return std::vector<float>{static_cast<float>(w / (w + 1))};
  };
  const std::vector<float> uncapped = out_for(4), capped = out_for(2 * std::tanh(2.0));
  const Float64AttentionShape plain{1, 1, 1}, cap_2{1, 1, 1, 2.0};
  EXPECT_NEAR(RowErrorAgainstFloat64(kv, plain, q.data(), uncapped.data()), 0, 1e-7);
  EXPECT_NEAR(RowErrorAgainstFloat64(kv, cap_2, q.data(), capped.data()), 0, 1e-7);
  EXPECT_GT(RowErrorAgainstFloat64(kv, plain, q.data(), capped.data()), 0.05);
  EXPECT_GT(RowErrorAgainstFloat64(kv, cap_2, q.data(), uncapped.data()), 0.05);
}

}  // namespace
}  // namespace int4kv
