#include "server/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>
#include <map>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;

std::vector<float> RandomLogits(int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(n);
  for (float& x : logits) x = normal(rng);
  return logits;
}

TEST(SamplerTest, Validation) {
  SamplingParams p;
  EXPECT_TRUE(ValidateSamplingParams(p).ok());
  p.temperature = -0.1f;
  EXPECT_THAT(std::string(ValidateSamplingParams(p).message()),
              HasSubstr("temperature = -0.1 is invalid: must be in [0, 100]"));
  p.temperature = NAN;
  EXPECT_THAT(std::string(ValidateSamplingParams(p).message()), HasSubstr("temperature = nan"));
  p.temperature = kMaxTemperature;  // the range's end
  EXPECT_TRUE(ValidateSamplingParams(p).ok());
  p = SamplingParams();
  p.top_p = 0.0f;
  EXPECT_THAT(std::string(ValidateSamplingParams(p).message()),
              HasSubstr("top_p = 0 is invalid: must be in (0, 1]"));
  p.top_p = 1.5f;
  EXPECT_EQ(ValidateSamplingParams(p).code(), absl::StatusCode::kInvalidArgument);
  p.top_p = NAN;
  EXPECT_EQ(ValidateSamplingParams(p).code(), absl::StatusCode::kInvalidArgument);
  p = SamplingParams();
  p.top_k = -1;
  EXPECT_THAT(std::string(ValidateSamplingParams(p).message()),
              HasSubstr("top_k = -1 is invalid: must be >= 0"));
}

TEST(SamplerTest, ArgMaxTakesLowestOnTies) {
  const std::vector<float> v = {1, 5, 3, 5};
  EXPECT_EQ(ArgMax(v), 1);
  const std::vector<float> with_nan = {NAN, 2, 7};
  EXPECT_EQ(ArgMax(with_nan), 2);
}

TEST(SamplerTest, GreedyAndTopK1AreArgMax) {
  SamplingParams greedy;
  SamplingParams top1;
  top1.temperature = 1.5f;
  top1.top_k = 1;
  Sampler a(greedy, 1), b(top1, 2);
  for (int i = 0; i < 20; ++i) {
    const std::vector<float> logits = RandomLogits(300, i);
    EXPECT_EQ(a.Sample(logits), ArgMax(logits));
    EXPECT_EQ(b.Sample(logits), ArgMax(logits));
  }
}

TEST(SamplerTest, SameSeedSameTokens) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.9f;
  p.top_k = 50;
  Sampler a(p, 42), b(p, 42), c(p, 43);
  std::vector<int32_t> ta, tb, tc;
  for (int i = 0; i < 50; ++i) {
    const std::vector<float> logits = RandomLogits(200, i);
    ta.push_back(a.Sample(logits));
    tb.push_back(b.Sample(logits));
    tc.push_back(c.Sample(logits));
  }
  EXPECT_EQ(ta, tb);
  EXPECT_NE(ta, tc);
}

TEST(SamplerTest, TopKKeepsOnlyTheKMostLikely) {
  SamplingParams p;
  p.temperature = 5.0f;  // flat, so without the cut every token would show up
  p.top_k = 3;
  Sampler s(p, 9);
  const std::vector<float> logits = {0.5f, 3, 1, 2.5f, 0, 2.9f, -1};
  for (int i = 0; i < 500; ++i) {
    const int32_t t = s.Sample(logits);
    EXPECT_TRUE(t == 1 || t == 3 || t == 5) << t;
  }
}

// top_k applies with top_p as well: the nucleus is taken from the k most likely tokens.
TEST(SamplerTest, TopKHoldsWithTopP) {
  SamplingParams p;
  p.temperature = 5.0f;
  p.top_k = 3;
  p.top_p = 0.99f;  // on its own, a nucleus this wide keeps all 7 tokens at this temperature
  Sampler s(p, 10);
  const std::vector<float> logits = {0.5f, 3, 1, 2.5f, 0, 2.9f, -1};
  for (int i = 0; i < 500; ++i) {
    const int32_t t = s.Sample(logits);
    EXPECT_TRUE(t == 1 || t == 3 || t == 5) << t;
  }
}

// Among equal logits the cut keeps the lowest ids, as ArgMax does: top_k = 1 over a three-way
// tie at the top is id 0, every time.
TEST(SamplerTest, TopKCutTakesLowestIdsOnTies) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 1;
  Sampler s(p, 11);
  const std::vector<float> logits = {2, 2, 2, 0};
  for (int i = 0; i < 50; ++i) EXPECT_EQ(s.Sample(logits), 0);
}

TEST(SamplerTest, TopPKeepsTheNucleus) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.5f;
  Sampler s(p, 3);
  // Probabilities ~ {0.09, 0.67, 0.24}: 0.67 alone reaches 0.5, so only token 1 is left.
  const std::vector<float> logits = {0.0f, 2.0f, 0.98f};
  for (int i = 0; i < 200; ++i) EXPECT_EQ(s.Sample(logits), 1);
  p.top_p = 0.8f;  // needs tokens 1 and 2
  Sampler s2(p, 4);
  std::map<int32_t, int> counts;
  for (int i = 0; i < 2000; ++i) ++counts[s2.Sample(logits)];
  EXPECT_EQ(counts.count(0), 0u);
  EXPECT_GT(counts[2], 400);  // 0.24 / 0.91 of 2000 ~ 530
  EXPECT_GT(counts[1], 1300);
}

// The nucleus by the definition: every candidate sorted, most likely first, cut where the mass
// reaches top_p; each draw then takes one Uniform() from the generator it is given, as Sampler
// does from its own.
class NucleusByFullSort {
 public:
  NucleusByFullSort(const std::vector<float>& logits, float temperature, float top_p) {
    for (int32_t i = 0; i < static_cast<int32_t>(logits.size()); ++i) {
      order_.push_back({logits[i], i});
    }
    std::sort(order_.begin(), order_.end(), [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    for (const auto& [logit, id] : order_) {
      weights_.push_back(std::exp((double{logit} - order_[0].first) / temperature));
    }
    const double total = std::accumulate(weights_.begin(), weights_.end(), 0.0);
    double mass = 0;
    for (size_t i = 0; i < order_.size(); ++i) {
      mass += weights_[i] / total;
      if (mass >= top_p) {
        weights_.resize(i + 1);
        break;
      }
    }
    kept_ = std::accumulate(weights_.begin(), weights_.end(), 0.0);
  }
  size_t size() const { return weights_.size(); }
  int32_t Draw(Rng* rng) const {
    const double target = rng->Uniform() * kept_;
    double cumulative = 0;
    for (size_t i = 0; i < weights_.size(); ++i) {
      cumulative += weights_[i];
      if (target < cumulative) return order_[i].second;
    }
    return order_[weights_.size() - 1].second;
  }

 private:
  std::vector<std::pair<float, int32_t>> order_;
  std::vector<double> weights_;  // of the nucleus, in order
  double kept_ = 0;
};

// Sampler finds the nucleus without sorting the whole vocabulary; nuclei of one token to the
// whole vocabulary (past each size its search grows through) give the tokens of a full sort.
TEST(SamplerTest, TopPMatchesAFullSortForLargeVocabularies) {
  const std::vector<float> logits = RandomLogits(20000, 29);
  size_t smallest = logits.size(), largest = 0;
  for (const float temperature : {0.3f, 1.0f, 3.0f}) {
    for (const float top_p : {0.05f, 0.5f, 0.9f, 0.999f}) {
      SamplingParams p;
      p.temperature = temperature;
      p.top_p = top_p;
      Sampler sampler(p, 17);
      Rng rng(17);
      const NucleusByFullSort reference(logits, temperature, top_p);
      smallest = std::min(smallest, reference.size());
      largest = std::max(largest, reference.size());
      for (int i = 0; i < 50; ++i) {
        ASSERT_EQ(sampler.Sample(logits), reference.Draw(&rng))
            << "temperature " << temperature << " top_p " << top_p << " draw " << i;
      }
    }
  }
  EXPECT_LT(smallest, 64u);
  EXPECT_GT(largest, 4096u);
}

// A broken forward pass may give NaN or infinite logits: NaN ones are never drawn (nor do they
// make the sorts undefined), and an infinite one is taken as greedy would take it.
TEST(SamplerTest, NonFiniteLogits) {
  for (const int32_t top_k : {0, 5}) {
    for (const float top_p : {1.0f, 0.9f}) {
      SamplingParams p;
      p.temperature = 1.0f;
      p.top_k = top_k;
      p.top_p = top_p;
      Sampler s(p, 5);
      std::vector<float> logits = RandomLogits(64, 3);
      for (int i = 0; i < 64; i += 3) logits[i] = NAN;
      for (int i = 0; i < 300; ++i) {
        const int32_t t = s.Sample(logits);
        ASSERT_TRUE(t >= 0 && t < 64) << t;
        EXPECT_FALSE(std::isnan(logits[t])) << "top_k " << top_k << " top_p " << top_p;
      }
      logits[10] = INFINITY;
      for (int i = 0; i < 20; ++i) EXPECT_EQ(s.Sample(logits), 10);
      const std::vector<float> no_finite = {NAN, -INFINITY, NAN, -INFINITY};
      EXPECT_EQ(s.Sample(no_finite), 1);  // greedy's choice: the first that is not NaN
      EXPECT_EQ(s.Sample(std::vector<float>{NAN, NAN, NAN}), -1);  // nothing to take
    }
  }
}

TEST(SamplerTest, FrequenciesFollowTheSoftmax) {
  SamplingParams p;
  p.temperature = 2.0f;
  Sampler s(p, 11);
  const std::vector<float> logits = {0, 2, 4};
  // softmax(logits / 2) = e^{0,1,2} / sum
  const double total = 1 + std::exp(1.0) + std::exp(2.0);
  std::vector<int> counts(3);
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[s.Sample(logits)];
  EXPECT_NEAR(counts[0] / double{n}, 1 / total, 0.015);
  EXPECT_NEAR(counts[1] / double{n}, std::exp(1.0) / total, 0.015);
  EXPECT_NEAR(counts[2] / double{n}, std::exp(2.0) / total, 0.015);
}

TEST(RngTest, UniformInRange) {
  Rng rng(5);
  for (int i = 0; i < 1000; ++i) {
    const double u = rng.Uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
  Rng a(7), b(7);
  EXPECT_EQ(a.Next(), b.Next());
}

}  // namespace
}  // namespace int4kv
