#include "server/int4_kv_attention.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kv_cache/quantize.h"
#include "kv_cache/store_kv.h"

namespace int4kv {
namespace {

constexpr int kQHeads = 4, kKvHeads = 2, kHeadDim = 16, kLayers = 2;

std::unique_ptr<KvCache> MakeCache() {
  KvCacheConfig config;
  config.num_layers = kLayers;
  config.kv_heads = kKvHeads;
  config.head_dim = kHeadDim;
  config.group_size = 8;
  config.capacity_slots = 64;
  config.max_requests = 2;
  config.max_seq_len = 16;
  return *KvCache::Create(config, MemoryKind::kHost);
}

std::vector<float> Random(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// A step's random inputs for `n` tokens: q [n][kQHeads][kHeadDim], k and v
// [n][kKvHeads][kHeadDim], drawn with seeds seed, seed + 1 and seed + 2.
struct StepInputs {
  std::vector<float> q, k, v;
};
StepInputs RandomStep(int n, uint64_t seed) {
  return {Random(n * kQHeads * kHeadDim, seed), Random(n * kKvHeads * kHeadDim, seed + 1),
          Random(n * kKvHeads * kHeadDim, seed + 2)};
}

// One request of `n` tokens in one step, positions 0..n-1.
StepBatch Prefill(KvCache& cache, int n) {
  const int32_t row = *cache.requests().AllocateRequest();
  std::vector<int32_t> slots;
  EXPECT_TRUE(cache.slots().Allocate(n, &slots).ok());
  EXPECT_TRUE(cache.requests().Append(row, slots).ok());
  StepBatch batch;
  for (int p = 0; p < n; ++p) batch.AddToken(0, p, slots[p], row);
  return batch;
}

TEST(Int4KvAttentionTest, StoresQuantizedRowsAndAttendsCausally) {
  std::unique_ptr<KvCache> cache = MakeCache();
  std::unique_ptr<Int4KvAttention> attention = *Int4KvAttention::Create(cache.get(), kQHeads, 8, 1);
  const int n = 3;
  const StepBatch batch = Prefill(*cache, n);
  ASSERT_TRUE(attention->Plan(batch).ok());
  const auto [q, k, v] = RandomStep(n, 1);
  std::vector<float> out(n * kQHeads * kHeadDim, NAN);
  ASSERT_TRUE(attention->Attend(1, q.data(), k.data(), v.data(), out.data()).ok());

  // The cache holds the INT4 round trip of layer 1's K/V, in the tokens' slots.
  std::vector<float> stored(n * 2 * kKvHeads * kHeadDim);
  ASSERT_TRUE(DequantizeHost(cache->view(), 1, batch.slots, stored.data()).ok());
  // Rows [0, kKvHeads) of a token are its K heads, then its V heads; the expected outputs
  // below are built from these stored rows, so both halves are checked against the inputs.
  for (int t = 0; t < n; ++t) {
    for (int row = 0; row < 2 * kKvHeads; ++row) {
      const int h = row % kKvHeads;
      const float* input = &(row < kKvHeads ? k : v)[(t * kKvHeads + h) * kHeadDim];
      uint8_t bytes[kHeadDim / 2];
      uint16_t scales[kHeadDim / 8];
      QuantizeRow([&](int i) { return input[i]; }, kHeadDim, 8, ParamDtype::kFloat16,
                  QuantMode::kSymmetric, QuantRounding::kNearestEven, bytes, scales, nullptr);
      for (int i = 0; i < kHeadDim; ++i) {
        ASSERT_EQ(stored[(t * 2 * kKvHeads + row) * kHeadDim + i],
                  DequantizeElement(bytes, scales, nullptr, i, 8, ParamDtype::kFloat16,
                                    QuantMode::kSymmetric))
            << "token " << t << " row " << row;
      }
    }
  }
  // Token 0 sees only itself: every query head's output is its KV head's stored V row.
  for (int h = 0; h < kQHeads; ++h) {
    const int kv_head = h / (kQHeads / kKvHeads);
    for (int i = 0; i < kHeadDim; ++i) {
      EXPECT_NEAR(out[h * kHeadDim + i], stored[(kKvHeads + kv_head) * kHeadDim + i], 1e-6);
    }
  }
  // Token 2 attends over tokens 0..2: check one head against a float64 softmax over the
  // stored rows.
  const int head = 3, kv_head = 1;
  double scores[3], total = 0, expected[kHeadDim] = {};
  for (int t = 0; t < 3; ++t) {
    double dot = 0;
    for (int i = 0; i < kHeadDim; ++i) {
      dot += double{q[(2 * kQHeads + head) * kHeadDim + i]} *
             stored[(t * 2 * kKvHeads + kv_head) * kHeadDim + i];
    }
    scores[t] = std::exp(dot / std::sqrt(double{kHeadDim}));
    total += scores[t];
  }
  for (int t = 0; t < 3; ++t) {
    for (int i = 0; i < kHeadDim; ++i) {
      expected[i] +=
          scores[t] / total * stored[(t * 2 * kKvHeads + kKvHeads + kv_head) * kHeadDim + i];
    }
  }
  for (int i = 0; i < kHeadDim; ++i) {
    EXPECT_NEAR(out[(2 * kQHeads + head) * kHeadDim + i], expected[i], 1e-5);
  }
}

TEST(Int4KvAttentionTest, Errors) {
  std::unique_ptr<KvCache> cache = MakeCache();
  EXPECT_EQ(Int4KvAttention::Create(nullptr, kQHeads, 8, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Int4KvAttention::Create(cache.get(), 3, 8, 1).status().code(),  // not a multiple
            absl::StatusCode::kInvalidArgument);
  std::unique_ptr<Int4KvAttention> attention = *Int4KvAttention::Create(cache.get(), kQHeads, 2, 1);
  const StepBatch batch = Prefill(*cache, 3);  // 3 rows > max_step_tokens 2
  EXPECT_EQ(attention->Plan(batch).code(), absl::StatusCode::kInvalidArgument);
}

// A token's K/V go to its slot and attention reads its row's table entries: a slot that is not
// the entry of the row's last position would write one place and read another (possibly
// another request's slot), so Plan refuses it, naming both.
TEST(Int4KvAttentionTest, EachSlotMustBeItsRowsLastEntry) {
  std::unique_ptr<KvCache> cache = MakeCache();
  std::unique_ptr<Int4KvAttention> attention = *Int4KvAttention::Create(cache.get(), kQHeads, 4, 1);
  const StepBatch first = Prefill(*cache, 3);
  const StepBatch other = Prefill(*cache, 2);  // another request's slots
  ASSERT_TRUE(attention->Plan(first).ok());
  // A row that skips part of its context would not attend the token itself.
  StepBatch windowed = first;
  windowed.rows[2].first_token = 1;
  const absl::Status skipped = attention->Plan(windowed);
  EXPECT_EQ(skipped.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(skipped.message()),
              ::testing::HasSubstr("StepBatch.rows[2].first_token = 1 is not 0"));
  StepBatch swapped = first;
  swapped.slots[1] = other.slots[0];
  const absl::Status status = attention->Plan(swapped);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              ::testing::HasSubstr(absl::StrCat(
                  "StepBatch.slots[1] = ", other.slots[0], " is not its row's slot: request ",
                  first.rows[1].request, " holds slot ", first.slots[1], " at position 1")));
  StepBatch reserved = first;
  reserved.slots[2] = 0;  // slot 0, where padded rows write
  EXPECT_EQ(attention->Plan(reserved).code(), absl::StatusCode::kInvalidArgument);
}

// A failed Plan must not leave the previous step's slots behind: its tokens' K/V would be
// quantized into slots that by now may belong to other requests.
TEST(Int4KvAttentionTest, AFailedPlanLeavesNoSlotsToWrite) {
  std::unique_ptr<KvCache> cache = MakeCache();
  std::unique_ptr<Int4KvAttention> attention = *Int4KvAttention::Create(cache.get(), kQHeads, 2, 1);
  const int n = 2;
  const StepBatch first = Prefill(*cache, n);
  ASSERT_TRUE(attention->Plan(first).ok());
  const auto [q, k, v] = RandomStep(n, 4);
  std::vector<float> out(n * kQHeads * kHeadDim);
  ASSERT_TRUE(attention->Attend(0, q.data(), k.data(), v.data(), out.data()).ok());
  std::vector<float> before(n * 2 * kKvHeads * kHeadDim), after(before.size());
  ASSERT_TRUE(DequantizeHost(cache->view(), 0, first.slots, before.data()).ok());

  StepBatch mismatched = first;  // refused by the attention itself
  mismatched.slots.pop_back();
  EXPECT_EQ(attention->Plan(mismatched).code(), absl::StatusCode::kInvalidArgument);
  const std::vector<float> k1 = Random(n * kKvHeads * kHeadDim, 7);
  EXPECT_EQ(attention->Attend(0, q.data(), k1.data(), v.data(), out.data()).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(DequantizeHost(cache->view(), 0, first.slots, after.data()).ok());
  EXPECT_EQ(before, after) << "the first step's slots were written";

  const StepBatch too_long = Prefill(*cache, 3);  // refused by the backend: 3 rows > 2
  EXPECT_EQ(attention->Plan(too_long).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(attention->Attend(0, q.data(), k1.data(), v.data(), out.data()).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(DequantizeHost(cache->view(), 0, first.slots, after.data()).ok());
  EXPECT_EQ(before, after) << "the first step's slots were written";

  ASSERT_TRUE(attention->Plan(first).ok());  // a successful Plan makes Attend usable again
  EXPECT_TRUE(attention->Attend(0, q.data(), k1.data(), v.data(), out.data()).ok());
  ASSERT_TRUE(DequantizeHost(cache->view(), 0, first.slots, after.data()).ok());
  EXPECT_NE(before, after);
}

}  // namespace
}  // namespace int4kv
