#include "backend/cpu_decode_backend.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "backend/create_backend.h"
#include "gtest/gtest.h"
#include "kv_cache/kv_cache.h"
#include "kv_cache/store_kv.h"

namespace int4kv {
namespace {

struct Fixture {
  std::unique_ptr<KvCache> cache;
  std::vector<DecodeRow> rows;
};

// A host cache with `lengths.size()` requests of random K/V at random (permuted) slots.
Fixture MakeCache(int kv_heads, int head_dim, int group, QuantMode mode,
                  const std::vector<int>& lengths, std::mt19937& rng,
                  ParamDtype param_dtype = ParamDtype::kFloat16) {
  KvCacheConfig config;
  config.num_layers = 2;
  config.kv_heads = kv_heads;
  config.head_dim = head_dim;
  config.group_size = group;
  config.quant_mode = mode;
  config.param_dtype = param_dtype;
  int total = 0;
  int longest = 1;
  for (int len : lengths) total += len, longest = std::max(longest, len);
  config.capacity_slots = total + 7;
  config.max_requests = static_cast<int>(lengths.size());
  config.max_seq_len = longest;
  Fixture f;
  f.cache = *KvCache::Create(config, MemoryKind::kHost);
  std::vector<int32_t> order;
  EXPECT_TRUE(f.cache->slots().Allocate(total + 7, &order).ok());
  std::shuffle(order.begin(), order.end(), rng);
  std::normal_distribution<float> normal;
  size_t next = 0;
  for (int len : lengths) {
    const int32_t request = *f.cache->requests().AllocateRequest();
    std::vector<int32_t> slots(order.begin() + next, order.begin() + next + len);
    next += len;
    EXPECT_TRUE(f.cache->requests().Append(request, slots).ok());
    std::vector<float> k(static_cast<size_t>(len) * kv_heads * head_dim), v(k.size());
    for (int layer = 0; layer < 2; ++layer) {  // each layer its own K/V
      for (float& x : k) x = normal(rng);
      for (float& x : v) x = normal(rng);
      EXPECT_TRUE(
          StoreKvHost(f.cache->view(), layer, slots, KvRows{k.data(), v.data(), DType::kFloat32, 0})
              .ok());
    }
    f.rows.push_back({request, len});
  }
  return f;
}

// Plain float64 attention over DequantizeHost's values, written independently of the backend.
// lse, when given, receives each (row, head)'s log(sum_t exp(score_t)) ([rows][q_heads]; -inf
// for padded rows).
std::vector<double> Reference(const KvCache& cache, int layer, const std::vector<DecodeRow>& rows,
                              const std::vector<float>& q, int q_heads, double scale = 0,
                              std::vector<double>* lse = nullptr, double soft_cap = 0) {
  const KvLayout& layout = cache.view().layout;
  const int dim = layout.head_dim, group = q_heads / layout.kv_heads;
  if (scale == 0) scale = 1 / std::sqrt(double(dim));
  std::vector<double> out(rows.size() * q_heads * dim, 0.0);
  if (lse != nullptr) lse->assign(rows.size() * q_heads, -INFINITY);
  for (size_t b = 0; b < rows.size(); ++b) {
    if (rows[b].seq_len == 0) continue;
    const absl::Span<const int32_t> slots = cache.requests().Tokens(rows[b].request);
    std::vector<float> kv(static_cast<size_t>(rows[b].seq_len) * 2 * layout.kv_heads * dim);
    EXPECT_TRUE(
        DequantizeHost(cache.view(), layer, slots.subspan(0, rows[b].seq_len), kv.data()).ok());
    for (int h = 0; h < q_heads; ++h) {
      const int kvh = h / group;
      std::vector<double> s(rows[b].seq_len);
      double m = -1e300;
      for (int t = 0; t < rows[b].seq_len; ++t) {
        double dot = 0;
        for (int d = 0; d < dim; ++d) {
          dot += double{q[(b * q_heads + h) * dim + d]} *
                 kv[(static_cast<size_t>(t) * 2 * layout.kv_heads + kvh) * dim + d];
        }
        s[t] = dot * scale;
        if (soft_cap != 0) s[t] = soft_cap * std::tanh(s[t] / soft_cap);
        m = std::max(m, s[t]);
      }
      double z = 0;
      for (int t = 0; t < rows[b].seq_len; ++t) z += std::exp(s[t] - m);
      if (lse != nullptr) (*lse)[b * q_heads + h] = m + std::log(z);
      for (int t = 0; t < rows[b].seq_len; ++t) {
        const double p = std::exp(s[t] - m) / z;
        for (int d = 0; d < dim; ++d) {
          out[(b * q_heads + h) * dim + d] +=
              p *
              kv[(static_cast<size_t>(t) * 2 * layout.kv_heads + layout.kv_heads + kvh) * dim + d];
        }
      }
    }
  }
  return out;
}

double RelativeError(const std::vector<float>& got, const std::vector<double>& want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    diff += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-300));
}

TEST(CpuDecodeBackendTest, MatchesFloat64ReferenceAcrossShapes) {
  std::mt19937 rng(17);
  struct Case {
    int kv_heads, group_ratio, head_dim, group;
    QuantMode mode;
    ParamDtype params;
  };
  constexpr ParamDtype kF16 = ParamDtype::kFloat16, kBf16 = ParamDtype::kBFloat16;
  const Case cases[] = {
      {4, 2, 8, 8, QuantMode::kSymmetric, kF16},    {2, 1, 64, 16, QuantMode::kAsymmetric, kBf16},
      {1, 4, 128, 8, QuantMode::kSymmetric, kBf16}, {2, 8, 32, 32, QuantMode::kSymmetric, kF16},
      {1, 16, 16, 8, QuantMode::kAsymmetric, kF16}, {3, 2, 256, 128, QuantMode::kSymmetric, kF16},
      {2, 4, 64, 8, QuantMode::kAsymmetric, kBf16}};
  for (const Case& c : cases) {
    for (int threads : {1, 3}) {
      for (bool f64 : {false, true}) {
        SCOPED_TRACE(testing::Message()
                     << "kv_heads " << c.kv_heads << " G " << c.group_ratio << " dim " << c.head_dim
                     << " threads " << threads << " f64 " << f64 << " bf16 params "
                     << (c.params == kBf16));
        Fixture f =
            MakeCache(c.kv_heads, c.head_dim, c.group, c.mode, {1, 0, 37, 130, 2}, rng, c.params);
        // The default scale (1 / sqrt(head_dim)) and a given one, alternately; every third
        // case caps its logits at 1.5, where the scores of these rows (up to about 4) are cut
        // hard.
        const int index = static_cast<int>(&c - cases);
        const float scale = index % 2 == 0 ? 0.0f : 0.3f;
        const float soft_cap = index % 3 == 1 ? 1.5f : 0.0f;
        AttentionShape shape{
            c.kv_heads * c.group_ratio, c.kv_heads, c.head_dim, 8, 130, scale, soft_cap};
        BackendOptions options;
        options.cpu_threads = threads;
        options.cpu_float64 = f64;
        auto backend = *CreateCpuDecodeBackend(BindingFor(*f.cache), shape, options);
        const size_t n = f.rows.size() * shape.q_heads * c.head_dim;
        std::vector<float> q(n), out(n, std::numeric_limits<float>::quiet_NaN());
        std::normal_distribution<float> normal;
        for (float& x : q) x = normal(rng);
        ASSERT_TRUE(backend->Plan(f.rows, nullptr).ok());
        for (int layer : {0, 1}) {  // different K/V each: a backend reading the wrong one fails
          ASSERT_TRUE(backend->Run(layer, q.data(), out.data(), nullptr).ok());
          const std::vector<double> want = Reference(*f.cache, layer, f.rows, q, shape.q_heads,
                                                     shape.softmax_scale, nullptr, soft_cap);
          EXPECT_LT(RelativeError(out, want), f64 ? 1e-7 : 1e-5) << "layer " << layer;
          if (soft_cap != 0) {  // the cap moves the outputs far more than the tolerance
            const std::vector<double> uncapped =
                Reference(*f.cache, layer, f.rows, q, shape.q_heads, shape.softmax_scale);
            EXPECT_GT(RelativeError(out, uncapped), 1e-2) << "layer " << layer;
          }
          // The padded row (index 1) is all zeros.
          for (int i = 0; i < shape.q_heads * c.head_dim; ++i) {
            ASSERT_EQ(out[shape.q_heads * c.head_dim + i], 0.0f);
          }
          // In place (q and out one buffer): the same output.
          std::vector<float> in_place = q;
          ASSERT_TRUE(backend->Run(layer, in_place.data(), in_place.data(), nullptr).ok());
          EXPECT_EQ(in_place, out) << "in place, layer " << layer;
          // With the log-sum-exps: the same output, and each head's lse as the reference's.
          std::vector<float> with_lse(n, std::numeric_limits<float>::quiet_NaN());
          std::vector<float> lse(f.rows.size() * shape.q_heads,
                                 std::numeric_limits<float>::quiet_NaN());
          ASSERT_TRUE(
              backend->RunWithLse(layer, q.data(), with_lse.data(), lse.data(), nullptr).ok());
          EXPECT_EQ(with_lse, out) << "with lse, layer " << layer;
          std::vector<double> want_lse;
          Reference(*f.cache, layer, f.rows, q, shape.q_heads, shape.softmax_scale, &want_lse,
                    soft_cap);
          for (size_t i = 0; i < lse.size(); ++i) {
            if (std::isinf(want_lse[i])) {  // the padded row
              EXPECT_EQ(lse[i], -std::numeric_limits<float>::infinity()) << i;
              continue;
            }
            EXPECT_NEAR(lse[i], want_lse[i], (f64 ? 1e-6 : 1e-5) * (1 + std::abs(want_lse[i])))
                << "lse " << i << " layer " << layer;
          }
        }
      }
    }
  }
}

TEST(CpuDecodeBackendTest, BadPlansAreRejectedAndLeaveNoPlan) {
  std::mt19937 rng(3);
  Fixture f = MakeCache(1, 8, 8, QuantMode::kSymmetric, {4, 5}, rng);
  AttentionShape shape{2, 1, 8, 2, 5, 0};
  auto backend = *CreateCpuDecodeBackend(BindingFor(*f.cache), shape, BackendOptions{});
  EXPECT_EQ(backend->planned_rows(), -1);
  ASSERT_TRUE(backend->Plan(f.rows, nullptr).ok());
  EXPECT_EQ(backend->planned_rows(), 2);
  std::vector<float> q(2 * 2 * 8, 0.5f), planned(q.size()), after(q.size());
  ASSERT_TRUE(backend->Run(0, q.data(), planned.data(), nullptr).ok());
  const std::vector<DecodeRow> too_many = {{0, 1}, {1, 1}, {0, 1}};
  absl::Status s = backend->Plan(too_many, nullptr);
  EXPECT_NE(s.message().find("exceeds AttentionShape.max_batch (2)"), std::string::npos) << s;
  s = backend->Plan(std::vector<DecodeRow>{{0, 6}}, nullptr);
  EXPECT_NE(s.message().find("rows[0].seq_len = 6"), std::string::npos) << s;
  s = backend->Plan(std::vector<DecodeRow>{{0, 1}, {2, 1}}, nullptr);
  EXPECT_NE(s.message().find("rows[1].request = 2"), std::string::npos) << s;
  // A rejected plan leaves none (the caller's q and out are sized for the rejected batch):
  // Run refuses, and writes nothing, until a Plan succeeds.
  std::vector<float> untouched(q.size(), -7.0f);
  EXPECT_EQ(backend->planned_rows(), -1);
  s = backend->Run(0, q.data(), untouched.data(), nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(s.message(), kRunWithoutPlan);
  EXPECT_EQ(untouched, std::vector<float>(q.size(), -7.0f));
  ASSERT_TRUE(backend->Plan(f.rows, nullptr).ok());
  ASSERT_TRUE(backend->Run(0, q.data(), after.data(), nullptr).ok());
  EXPECT_EQ(after, planned);
  EXPECT_NE(planned, std::vector<float>(q.size(), 0.0f));
  EXPECT_FALSE(backend->Run(2, q.data(), after.data(), nullptr).ok());        // no layer 2
  EXPECT_TRUE(backend->Plan(std::vector<DecodeRow>{{99, 0}}, nullptr).ok());  // padded: any request
  EXPECT_EQ(backend->planned_rows(), 1);
  EXPECT_TRUE(backend->Plan(std::vector<DecodeRow>{}, nullptr).ok());
  EXPECT_EQ(backend->planned_rows(), 0);
}

// A request row keeps its old entries once freed, and a reused row holds the previous
// request's slots past its own tokens: a plan reading them would attend another request's
// K/V. With a KvCache's binding, Plan refuses such rows.
TEST(CpuDecodeBackendTest, RowsPastTheirRequestsTokensAreRejected) {
  std::mt19937 rng(5);
  Fixture f = MakeCache(1, 8, 8, QuantMode::kSymmetric, {4}, rng);
  auto backend =
      *CreateCpuDecodeBackend(BindingFor(*f.cache), {2, 1, 8, 1, 4, 0}, BackendOptions{});
  ASSERT_TRUE(backend->Plan(std::vector<DecodeRow>{{0, 4}}, nullptr).ok());
  RequestTable& requests = f.cache->requests();
  const std::vector<int32_t> old_slots(requests.Tokens(0).begin(), requests.Tokens(0).end());
  ASSERT_TRUE(requests.FreeRequest(0).ok());
  absl::Status s = backend->Plan(std::vector<DecodeRow>{{0, 4}}, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("rows[0].request = 0 is not a live request"), std::string::npos) << s;
  ASSERT_EQ(*requests.AllocateRequest(), 0);
  ASSERT_TRUE(requests.Append(0, absl::MakeConstSpan(old_slots.data(), 1)).ok());
  s = backend->Plan(std::vector<DecodeRow>{{0, 4}}, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("rows[0].seq_len = 4 exceeds the 1 tokens of request 0"),
            std::string::npos)
      << s;
  EXPECT_TRUE(backend->Plan(std::vector<DecodeRow>{{0, 1}}, nullptr).ok());
  // One past the request's tokens is already another request's slot.
  s = backend->Plan(std::vector<DecodeRow>{{0, 2}}, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("rows[0].seq_len = 2 exceeds the 1 tokens of request 0"),
            std::string::npos)
      << s;
  EXPECT_TRUE(backend->Plan(std::vector<DecodeRow>{{0, 0}}, nullptr).ok());  // padded
  // A binding made by hand carries no request bookkeeping, and is not checked.
  KvCacheBinding by_hand = BindingFor(*f.cache);
  by_hand.requests = nullptr;
  auto unchecked = *CreateCpuDecodeBackend(by_hand, {2, 1, 8, 1, 4, 0}, BackendOptions{});
  EXPECT_TRUE(unchecked->Plan(std::vector<DecodeRow>{{0, 4}}, nullptr).ok());
}

TEST(CpuDecodeBackendTest, BadShapesNameTheField) {
  std::mt19937 rng(3);
  Fixture f = MakeCache(2, 16, 8, QuantMode::kSymmetric, {3}, rng);
  const KvCacheBinding binding = BindingFor(*f.cache);
  struct Bad {
    AttentionShape shape;
    const char* field;
  };
  const Bad bad[] = {{{4, 1, 16, 1, 3, 0}, "AttentionShape.kv_heads = 1"},
                     {{4, 2, 32, 1, 3, 0}, "AttentionShape.head_dim = 32"},
                     {{3, 2, 16, 1, 3, 0}, "AttentionShape.q_heads = 3"},
                     {{64, 2, 16, 1, 3, 0}, "AttentionShape.q_heads = 64"},
                     {{4, 2, 16, 0, 3, 0}, "AttentionShape.max_batch = 0"},
                     {{4, 2, 16, 1, 4, 0}, "AttentionShape.max_seq_len = 4"},
                     {{4, 2, 16, 1, 3, -1}, "AttentionShape.softmax_scale = -1"},
                     {{4, 2, 16, 1, 3, std::nextafter(kMaxSoftmaxScale, 2 * kMaxSoftmaxScale)},
                      "AttentionShape.softmax_scale = 10000.001 is invalid: must be in [0, 10000]"},
                     {{4, 2, 16, 1, 3, std::numeric_limits<float>::quiet_NaN()},
                      "AttentionShape.softmax_scale = nan"},
                     {{4, 2, 16, 1, 3, 0, -1}, "AttentionShape.logit_soft_cap = -1"},
                     {{4, 2, 16, 1, 3, 0, std::nextafter(kMinLogitSoftCap, 0.0f)},
                      "AttentionShape.logit_soft_cap = 0.009999999 is invalid: must be 0 (no "
                      "cap) or in [0.01, 1000]"},
                     {{4, 2, 16, 1, 3, 0, std::nextafter(kMaxLogitSoftCap, 2 * kMaxLogitSoftCap)},
                      "AttentionShape.logit_soft_cap = 1000.00006"},
                     {{4, 2, 16, 1, 3, 0, std::numeric_limits<float>::infinity()},
                      "AttentionShape.logit_soft_cap = inf"},
                     {{4, 2, 16, 1, 3, 0, std::numeric_limits<float>::quiet_NaN()},
                      "AttentionShape.logit_soft_cap = nan"}};
  for (const Bad& b : bad) {
    const auto backend = CreateCpuDecodeBackend(binding, b.shape, BackendOptions{});
    ASSERT_FALSE(backend.ok()) << b.field;
    EXPECT_NE(backend.status().message().find(b.field), std::string::npos) << backend.status();
  }
  BackendOptions half;
  half.io_dtype = DType::kFloat16;
  EXPECT_FALSE(CreateCpuDecodeBackend(binding, {4, 2, 16, 1, 3, 0}, half).ok());
  // The ranges' ends are valid: 16 query heads a KV head, the largest softmax scale, the
  // smallest and largest soft caps, and max_seq_len equal to the table's row length.
  for (const AttentionShape& edge :
       {AttentionShape{32, 2, 16, 1, 3, 0}, AttentionShape{4, 2, 16, 1, 3, kMaxSoftmaxScale},
        AttentionShape{4, 2, 16, 1, 3, 0, kMinLogitSoftCap},
        AttentionShape{4, 2, 16, 1, 3, 0, kMaxLogitSoftCap}}) {
    const auto backend = CreateCpuDecodeBackend(binding, edge, BackendOptions{});
    EXPECT_TRUE(backend.ok()) << backend.status();
  }
}

// A binding filled by hand that describes no usable cache is rejected at creation, naming the
// field, instead of crashing there or in Run.
TEST(CpuDecodeBackendTest, BadBindingsNameTheField) {
  std::mt19937 rng(5);
  Fixture f = MakeCache(2, 16, 8, QuantMode::kSymmetric, {3}, rng);
  Fixture asym = MakeCache(2, 16, 8, QuantMode::kAsymmetric, {3}, rng);
  const AttentionShape shape{4, 2, 16, 1, 3, 0};
  struct Bad {
    KvCacheBinding binding;
    const char* field;
  };
  std::vector<Bad> bad;
  bad.push_back({KvCacheBinding{}, "KvCacheView.layout.num_slots = 0"});
  KvCacheBinding b = BindingFor(*f.cache);
  b.view.layout.num_layers = 0;
  bad.push_back({b, "KvCacheView.layout.num_layers = 0"});
  b = BindingFor(*f.cache);
  b.view.layout.group_size = 0;
  bad.push_back({b, "KvCacheView.layout.group_size = 0"});
  b = BindingFor(*f.cache);
  b.view.layout.num_slots = 1;
  bad.push_back({b, "KvCacheView.layout.num_slots = 1 is invalid: must be in [2, "});
  b = BindingFor(*f.cache);
  b.view.quant_mode = static_cast<QuantMode>(7);
  bad.push_back({b, "KvCacheView.quant_mode = 7"});
  b = BindingFor(*f.cache);
  b.view.scales = nullptr;
  bad.push_back({b, "KvCacheView.scales"});
  b = BindingFor(*f.cache);
  b.view.data = nullptr;
  bad.push_back({b, "KvCacheView.data"});
  b = BindingFor(*asym.cache);
  b.view.zeros = nullptr;
  bad.push_back({b, "KvCacheView.zeros"});
  b = BindingFor(*f.cache);
  b.req_to_token = nullptr;
  bad.push_back({b, "req_to_token"});
  b = BindingFor(*f.cache);
  b.max_requests = 0;
  bad.push_back({b, "max_requests"});
  // Fields that disagree with the RequestTable the binding names, whose bookkeeping Plan
  // checks rows against.
  b = BindingFor(*f.cache);
  b.max_requests = 5;
  bad.push_back({b,
                 "KvCacheBinding.max_requests = 5 does not match KvCacheBinding.requests' "
                 "max_requests (1)"});
  b = BindingFor(*f.cache);
  b.req_to_token_stride = 2;
  bad.push_back({b,
                 "KvCacheBinding.req_to_token_stride = 2 does not match "
                 "KvCacheBinding.requests' max_seq_len (3)"});
  b = BindingFor(*f.cache);
  b.view.layout.num_slots -= 1;
  bad.push_back({b, "KvCacheBinding.view.layout.num_slots = "});
  const std::vector<int32_t> other_table(3, 1);
  b = BindingFor(*f.cache);
  b.req_to_token = other_table.data();
  bad.push_back({b,
                 "KvCacheBinding.req_to_token is neither the host table nor the device "
                 "mirror of KvCacheBinding.requests"});
  for (const Bad& x : bad) {
    const auto backend = CreateCpuDecodeBackend(x.binding, shape, BackendOptions{});
    ASSERT_FALSE(backend.ok()) << x.field;
    EXPECT_EQ(backend.status().code(), absl::StatusCode::kInvalidArgument) << backend.status();
    EXPECT_NE(backend.status().message().find(x.field), std::string::npos) << backend.status();
  }
  EXPECT_TRUE(CreateCpuDecodeBackend(BindingFor(*asym.cache), shape, BackendOptions{}).ok());
  BackendOptions many;
  many.cpu_threads = 1 << 20;
  const auto backend = CreateCpuDecodeBackend(BindingFor(*f.cache), shape, many);
  ASSERT_FALSE(backend.ok());
  EXPECT_NE(backend.status().message().find("cpu_threads"), std::string::npos);
  // The cuda backend's field is range-checked here too, so that options refused by one
  // backend are not silently taken by the other.
  for (const int32_t splits : {-3, kMaxBatchInvariantSplits + 1}) {
    BackendOptions options;
    options.batch_invariant_splits = splits;
    const auto cpu = CreateCpuDecodeBackend(BindingFor(*f.cache), shape, options);
    EXPECT_EQ(cpu.status().code(), absl::StatusCode::kInvalidArgument) << cpu.status();
    EXPECT_NE(cpu.status().message().find(
                  absl::StrCat("BackendOptions.batch_invariant_splits = ", splits)),
              std::string::npos)
        << cpu.status();
  }
}

// Run before any Plan fails instead of returning OK with `out` untouched.
TEST(CpuDecodeBackendTest, RunBeforePlanFails) {
  std::mt19937 rng(6);
  Fixture f = MakeCache(1, 8, 8, QuantMode::kSymmetric, {3}, rng);
  auto backend = *CreateCpuDecodeBackend(BindingFor(*f.cache), {1, 1, 8, 1, 3, 0}, {});
  std::vector<float> q(8, 1.0f), out(8, 0.0f);
  EXPECT_EQ(backend->Run(0, q.data(), out.data(), nullptr).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_FALSE(backend->Plan(std::vector<DecodeRow>{{0, 4}}, nullptr).ok());  // rejected plan
  EXPECT_EQ(backend->Run(0, q.data(), out.data(), nullptr).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(backend->Plan(std::vector<DecodeRow>{}, nullptr).ok());  // an empty batch is a plan
  EXPECT_TRUE(backend->Run(0, q.data(), out.data(), nullptr).ok());
}

// Entries outside the pool in a table filled by hand: Run names the first bad row, the entry
// and its value whichever worker thread meets a bad row first, zeroes the bad rows and still
// computes the others.
TEST(CpuDecodeBackendTest, CorruptPageTableIsAnErrorNotACrash) {
  std::mt19937 rng(9);
  Fixture f = MakeCache(1, 8, 8, QuantMode::kSymmetric, {3, 3, 3}, rng);
  KvCacheBinding binding = BindingFor(*f.cache);
  // Request 0 is fine; request 1 holds a negative slot, request 2 one far past the pool.
  std::vector<int32_t> table = {1, 2, 3, 4, -5, 6, 7, 8, 1 << 30};
  binding.req_to_token = table.data();
  binding.req_to_token_stride = 3;
  binding.requests = nullptr;  // the table is the embedder's own
  const AttentionShape shape{1, 1, 8, 3, 3, 0};
  BackendOptions threads;
  threads.cpu_threads = 3;
  auto backend = *CreateCpuDecodeBackend(binding, shape, threads);
  const std::vector<float> q = {1, -1, 0.5f, 2, 0,  1, -2, 0.25f, 1,  1, 1, 1,
                                1, 1,  1,    1, -1, 0, 1,  0,     -1, 0, 1, 0};
  for (int repeat = 0; repeat < 20; ++repeat) {
    ASSERT_TRUE(backend->Plan(std::vector<DecodeRow>{{2, 3}, {0, 3}, {1, 3}}, nullptr).ok());
    std::vector<float> out(24, std::nanf("")), lse(3, std::nanf(""));
    const absl::Status s = backend->RunWithLse(0, q.data(), out.data(), lse.data(), nullptr);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("its lse -inf"), std::string::npos) << s;
    EXPECT_EQ(lse[0], -INFINITY);
    EXPECT_TRUE(std::isfinite(lse[1])) << lse[1];
    EXPECT_EQ(lse[2], -INFINITY);
    EXPECT_NE(s.message().find("rows[0] (request 2): req_to_token[2][2] = 1073741824 is "
                               "outside the pool's slots [0, 17)"),
              std::string::npos)
        << s;
    // Row 1 (request 0) as it comes out alone.
    ASSERT_TRUE(backend->Plan(std::vector<DecodeRow>{{0, 3}}, nullptr).ok());
    std::vector<float> alone(8);
    ASSERT_TRUE(backend->Run(0, q.data() + 8, alone.data(), nullptr).ok());
    for (int d = 0; d < 8; ++d) {
      EXPECT_EQ(out[d], 0.0f) << d;
      EXPECT_EQ(out[8 + d], alone[d]) << d;
      EXPECT_EQ(out[16 + d], 0.0f) << d;
    }
  }
  // Only the first seq_len entries count: request 2's first two are in the pool.
  ASSERT_TRUE(backend->Plan(std::vector<DecodeRow>{{2, 2}}, nullptr).ok());
  std::vector<float> out(8);
  EXPECT_TRUE(backend->Run(0, q.data(), out.data(), nullptr).ok());
  // The pool's edges: its last slot (16) is read, one past it (17) is refused.
  table[6] = 16;
  ASSERT_TRUE(backend->Plan(std::vector<DecodeRow>{{2, 1}}, nullptr).ok());
  EXPECT_TRUE(backend->Run(0, q.data(), out.data(), nullptr).ok());
  table[6] = 17;
  ASSERT_TRUE(backend->Plan(std::vector<DecodeRow>{{2, 1}}, nullptr).ok());
  const absl::Status past = backend->Run(0, q.data(), out.data(), nullptr);
  EXPECT_EQ(past.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(past.message().find("req_to_token[2][0] = 17 is outside the pool's slots [0, 17)"),
            std::string::npos)
      << past;
  EXPECT_EQ(past.message().find("lse"), std::string::npos) << past;  // Run writes none
}

// A binding over f's pools that reads `table`, the embedder's own: row r holds request 0's tokens
// [ranges[r].first, ranges[r].second), then zeros, in rows as long as request 0's context.
KvCacheBinding BindingOfTokenRanges(const Fixture& f,
                                    const std::vector<std::pair<int, int>>& ranges,
                                    std::vector<int32_t>* table) {
  const absl::Span<const int32_t> tokens = f.cache->requests().Tokens(0);
  const int stride = static_cast<int>(tokens.size());
  table->assign(ranges.size() * stride, 0);
  for (size_t r = 0; r < ranges.size(); ++r) {
    std::copy(tokens.begin() + ranges[r].first, tokens.begin() + ranges[r].second,
              table->begin() + r * stride);
  }
  KvCacheBinding binding = BindingFor(*f.cache);
  binding.req_to_token = table->data();
  binding.max_requests = static_cast<int32_t>(ranges.size());
  binding.req_to_token_stride = stride;
  binding.requests = nullptr;
  return binding;
}

// Rows `parts.first` and `parts.second` of a RunWithLse's out [rows][q_heads][dim] and lse
// [rows][q_heads], attention over two disjoint parts of a context, combined through their
// log-sum-exps: lse = log(e^lse_1 + e^lse_2) within lse_tolerance x (1 + |lse|) of row
// `parts.whole`'s, out = e^(lse_1 - lse) out_1 + e^(lse_2 - lse) out_2 within out_tolerance.
struct PartRows {
  size_t first, second, whole;
};
void ExpectPartsCombineIntoTheWhole(const std::vector<float>& out, const std::vector<float>& lse,
                                    const PartRows& parts, int q_heads, int dim,
                                    double lse_tolerance, double out_tolerance) {
  const size_t row_size = static_cast<size_t>(q_heads) * dim;
  for (int h = 0; h < q_heads; ++h) {
    const double first = lse[parts.first * q_heads + h], second = lse[parts.second * q_heads + h];
    const double top = std::max(first, second);
    const double both = top + std::log(std::exp(first - top) + std::exp(second - top));
    EXPECT_NEAR(both, lse[parts.whole * q_heads + h], lse_tolerance * (1 + std::abs(both)))
        << "head " << h;
    const double w_first = std::exp(first - both), w_second = std::exp(second - both);
    for (int d = 0; d < dim; ++d) {
      const size_t i = static_cast<size_t>(h) * dim + d;
      EXPECT_NEAR(
          w_first * out[parts.first * row_size + i] + w_second * out[parts.second * row_size + i],
          out[parts.whole * row_size + i], out_tolerance)
          << "head " << h << " dim " << d;
    }
  }
}

// The log-sum-exps are what a caller needs to combine attention over parts of a context:
// attention over tokens [0, 20) and over [20, 53), each with its lse, combine into attention over
// all 53, as the backend computes it in one row.
TEST(CpuDecodeBackendTest, LseCombinesAttentionOverPartsOfAContext) {
  std::mt19937 rng(21);
  constexpr int kTokens = 53, kSplit = 20, kQHeads = 8, kDim = 16;
  Fixture f = MakeCache(2, kDim, 8, QuantMode::kAsymmetric, {kTokens}, rng);
  // Rows of the embedder's own table: the first part, the second part, the whole context.
  std::vector<int32_t> table;
  const KvCacheBinding binding =
      BindingOfTokenRanges(f, {{0, kSplit}, {kSplit, kTokens}, {0, kTokens}}, &table);
  const std::vector<DecodeRow> rows = {{0, kSplit}, {1, kTokens - kSplit}, {2, kTokens}};
  // One query for all three rows, at twice the usual spread so that the softmax is peaked.
  const size_t row_size = kQHeads * kDim;
  std::vector<float> q(3 * row_size);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (size_t i = 0; i < row_size; ++i) q[i] = q[row_size + i] = q[2 * row_size + i] = normal(rng);
  for (bool f64 : {false, true}) {
    SCOPED_TRACE(f64 ? "float64" : "float32");
    BackendOptions options;
    options.cpu_float64 = f64;
    auto backend = *CreateCpuDecodeBackend(binding, {kQHeads, 2, kDim, 3, kTokens, 0}, options);
    std::vector<float> out(q.size()), lse(3 * kQHeads);
    ASSERT_TRUE(backend->Plan(rows, nullptr).ok());
    ASSERT_TRUE(backend->RunWithLse(1, q.data(), out.data(), lse.data(), nullptr).ok());
    const double tolerance = f64 ? 1e-6 : 2e-5;
    ExpectPartsCombineIntoTheWhole(out, lse, {0, 1, 2}, kQHeads, kDim, tolerance, tolerance);
  }
}

// A row that attends tokens [first_token, seq_len) computes what a row over those tokens alone
// does, bit for bit, reads no entry before them, and combines with the prefix it skips into
// the whole context through the log-sum-exps; first_token == seq_len attends nothing.
TEST(CpuDecodeBackendTest, FirstTokenAttendsTheRestOfTheContext) {
  std::mt19937 rng(26);
  constexpr int kTokens = 60, kFirst = 25, kQHeads = 4, kDim = 16;
  Fixture f = MakeCache(2, kDim, 8, QuantMode::kSymmetric, {kTokens}, rng);
  // The embedder's table: request 0 the whole context, request 1 its tokens from kFirst on.
  std::vector<int32_t> table;
  const KvCacheBinding binding = BindingOfTokenRanges(f, {{0, kTokens}, {kFirst, kTokens}}, &table);
  DecodeRow window{0, kTokens, kFirst}, nothing{0, kTokens, kTokens};
  const std::vector<DecodeRow> rows = {
      window, {1, kTokens - kFirst}, {0, kFirst}, {0, kTokens}, nothing};
  const size_t row_size = kQHeads * kDim;
  std::vector<float> q(rows.size() * row_size);
  std::normal_distribution<float> normal;
  for (size_t i = 0; i < row_size; ++i) {
    q[i] = normal(rng);
    for (size_t r = 1; r < rows.size(); ++r) q[r * row_size + i] = q[i];
  }
  for (bool f64 : {false, true}) {
    SCOPED_TRACE(f64 ? "float64" : "float32");
    BackendOptions options;
    options.cpu_float64 = f64;
    auto backend = *CreateCpuDecodeBackend(binding, {kQHeads, 2, kDim, 5, kTokens, 0}, options);
    std::vector<float> out(q.size(), std::nanf("")), lse(rows.size() * kQHeads, std::nanf(""));
    ASSERT_TRUE(backend->Plan(rows, nullptr).ok());
    ASSERT_TRUE(backend->RunWithLse(0, q.data(), out.data(), lse.data(), nullptr).ok());
    for (size_t i = 0; i < row_size; ++i) {
      EXPECT_EQ(out[i], out[row_size + i]) << i;  // the window = its tokens as a row
      EXPECT_EQ(out[4 * row_size + i], 0.0f) << i;
    }
    for (int h = 0; h < kQHeads; ++h) {
      EXPECT_EQ(lse[h], lse[kQHeads + h]) << h;
      EXPECT_EQ(lse[4 * kQHeads + h], -INFINITY) << h;
    }
    // The skipped prefix (row 2) and the window (row 0) combine into the whole context (row 3).
    ExpectPartsCombineIntoTheWhole(out, lse, {2, 0, 3}, kQHeads, kDim, 1e-5, 2e-5);
  }
  // Entries before first_token are never read: one outside the pool there fails only the rows
  // that attend it.
  table[3] = -5;
  auto backend = *CreateCpuDecodeBackend(binding, {kQHeads, 2, kDim, 5, kTokens, 0}, {});
  std::vector<float> out(q.size());
  ASSERT_TRUE(backend->Plan(std::vector<DecodeRow>{window}, nullptr).ok());
  EXPECT_TRUE(backend->Run(0, q.data(), out.data(), nullptr).ok());
  ASSERT_TRUE(backend->Plan(std::vector<DecodeRow>{{0, kTokens, 3}}, nullptr).ok());
  const absl::Status s = backend->Run(0, q.data(), out.data(), nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("req_to_token[0][3] = -5"), std::string::npos) << s;
  // first_token outside [0, seq_len] is refused, naming the row and the field.
  for (const DecodeRow& bad :
       {DecodeRow{0, kTokens, kTokens + 1}, DecodeRow{0, kTokens, -1}, DecodeRow{0, 0, 1}}) {
    const absl::Status plan = backend->Plan(std::vector<DecodeRow>{window, bad}, nullptr);
    EXPECT_EQ(plan.code(), absl::StatusCode::kInvalidArgument) << plan;
    EXPECT_NE(
        plan.message().find(absl::StrCat("rows[1].first_token = ", bad.first_token,
                                         " is out of range [0, ", bad.seq_len, "] (its seq_len)")),
        std::string::npos)
        << plan;
  }
}

// An lse buffer that is misaligned or shares bytes with q or out is refused before anything is
// written; one that ends where out begins, or begins where it ends, is fine.
TEST(CpuDecodeBackendTest, LseBuffersThatOverlapOrAreMisalignedAreRefused) {
  std::mt19937 rng(22);
  Fixture f = MakeCache(1, 8, 8, QuantMode::kSymmetric, {3, 2}, rng);
  auto backend = *CreateCpuDecodeBackend(BindingFor(*f.cache), {2, 1, 8, 2, 3, 0}, {});
  ASSERT_TRUE(backend->Plan(f.rows, nullptr).ok());
  // One allocation: [q of 32][lse of 4][out of 32][lse of 4].
  constexpr size_t kOut = 2 * 2 * 8, kLse = 2 * 2;
  std::vector<float> memory(kOut + kLse + kOut + kLse, -7.0f);
  std::fill_n(memory.begin(), kOut, 0.5f);
  const float* q = memory.data();
  float* out = memory.data() + kOut + kLse;
  auto refused = [&](float* lse, absl::string_view expected) {
    const std::vector<float> before = memory;
    const absl::Status s = backend->RunWithLse(0, q, out, lse, nullptr);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find(expected), std::string::npos) << s;
    EXPECT_EQ(memory, before) << "written despite " << s;
  };
  refused(out - kLse + 1, "overlaps out");  // its last element is out's first
  refused(out + kOut - 1, "overlaps out");  // its first element is out's last
  refused(out + 4, "overlaps out");
  refused(memory.data() + kOut - 1, "overlaps q");  // its first element is q's last
  refused(reinterpret_cast<float*>(reinterpret_cast<char*>(out + kOut) + 2), "lse must be aligned");
  EXPECT_TRUE(backend->RunWithLse(0, q, out, out - kLse, nullptr).ok());  // right after q
  EXPECT_TRUE(backend->RunWithLse(0, q, out, out + kOut, nullptr).ok());
  for (size_t i = 0; i < kLse; ++i) EXPECT_EQ(out[-kLse + i], out[kOut + i]) << i;
  EXPECT_TRUE(std::isfinite(out[kOut]));
}

// Rows of q read from a wider buffer (a fused QKV output's rows hold K and V after the
// queries) and rows of out written into one: the same values as dense rows, and nothing
// between the rows touched, in place too.
TEST(CpuDecodeBackendTest, RowStridesReadAndWriteInsideWiderBuffers) {
  std::mt19937 rng(23);
  Fixture f = MakeCache(2, 8, 8, QuantMode::kSymmetric, {3, 0, 5}, rng);
  constexpr int kRow = 4 * 8;  // q_heads x head_dim
  const AttentionShape shape{4, 2, 8, 3, 5, 0};
  auto dense = *CreateCpuDecodeBackend(BindingFor(*f.cache), shape, {});
  std::vector<float> q(3 * kRow), want(q.size()), want_lse(3 * 4);
  std::normal_distribution<float> normal;
  for (float& x : q) x = normal(rng);
  ASSERT_TRUE(dense->Plan(f.rows, nullptr).ok());
  ASSERT_TRUE(dense->RunWithLse(0, q.data(), want.data(), want_lse.data(), nullptr).ok());

  constexpr int64_t kQStride = kRow + 2 * 16, kOutStride = kRow + 8;  // 2 KV heads of 8 after q
  std::vector<float> fused(3 * kQStride);
  for (float& x : fused) x = normal(rng);
  for (int b = 0; b < 3; ++b) std::copy_n(q.data() + b * kRow, kRow, fused.data() + b * kQStride);
  BackendOptions options;
  options.q_row_stride = kQStride;
  options.out_row_stride = kOutStride;
  auto strided = *CreateCpuDecodeBackend(BindingFor(*f.cache), shape, options);
  ASSERT_TRUE(strided->Plan(f.rows, nullptr).ok());
  std::vector<float> out(3 * kOutStride, -7.0f), lse(3 * 4);
  const std::vector<float> fused_before = fused;
  ASSERT_TRUE(strided->RunWithLse(0, fused.data(), out.data(), lse.data(), nullptr).ok());
  EXPECT_EQ(fused, fused_before);
  EXPECT_EQ(lse, want_lse);
  for (int b = 0; b < 3; ++b) {
    for (int i = 0; i < kOutStride; ++i) {
      EXPECT_EQ(out[b * kOutStride + i], i < kRow ? want[b * kRow + i] : -7.0f)
          << "row " << b << " element " << i;
    }
  }
  // In place, one stride for both: each row's queries become its output, the rest stays.
  options.out_row_stride = kQStride;
  auto in_place = *CreateCpuDecodeBackend(BindingFor(*f.cache), shape, options);
  ASSERT_TRUE(in_place->Plan(f.rows, nullptr).ok());
  ASSERT_TRUE(in_place->Run(0, fused.data(), fused.data(), nullptr).ok());
  for (int b = 0; b < 3; ++b) {
    for (int i = 0; i < kQStride; ++i) {
      const size_t at = b * kQStride + i;
      EXPECT_EQ(fused[at], i < kRow ? want[b * kRow + i] : fused_before[at])
          << "row " << b << " element " << i;
    }
  }
}

// A cpu backend over `f` with rows `q_stride` and `out_stride` apart, planned for f's rows.
std::unique_ptr<DecodeAttentionBackend> PlannedWithStrides(const Fixture& f,
                                                           const AttentionShape& shape,
                                                           int64_t q_stride, int64_t out_stride) {
  BackendOptions options;
  options.q_row_stride = q_stride;
  options.out_row_stride = out_stride;
  auto backend = CreateCpuDecodeBackend(BindingFor(*f.cache), shape, options);
  EXPECT_TRUE(backend.ok()) << backend.status();
  EXPECT_TRUE((*backend)->Plan(f.rows, nullptr).ok());
  return *std::move(backend);
}

// Run with q and out as one buffer, whose two strides would let rows overwrite other rows'
// queries, is refused naming both, and writes nothing.
void ExpectOneBufferWithTwoStridesRefused(DecodeAttentionBackend& backend,
                                          std::vector<float>* memory, int64_t q_stride,
                                          int64_t out_stride) {
  const std::vector<float> before = *memory;
  const absl::Status s = backend.Run(0, memory->data(), memory->data(), nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find(absl::StrCat("their row strides differ (", q_stride, " and ",
                                          out_stride, " elements)")),
            std::string::npos)
      << s;
  EXPECT_EQ(*memory, before);
}

// Strides below a row or past kMaxRowStride are refused at creation, naming the field; at Run,
// q and out given as one buffer with two strides, or overlapping without being one buffer,
// are refused before anything is written.
TEST(CpuDecodeBackendTest, RowStridesOutOfRangeAndOverlappingRowsAreRefused) {
  std::mt19937 rng(24);
  Fixture f = MakeCache(1, 8, 8, QuantMode::kSymmetric, {3, 2}, rng);
  const AttentionShape shape{2, 1, 8, 2, 3, 0};  // rows of 16 elements
  auto refused_option = [&](int64_t q_stride, int64_t out_stride, absl::string_view expected) {
    BackendOptions options;
    options.q_row_stride = q_stride;
    options.out_row_stride = out_stride;
    const auto backend = CreateCpuDecodeBackend(BindingFor(*f.cache), shape, options);
    ASSERT_FALSE(backend.ok()) << q_stride << " " << out_stride;
    EXPECT_EQ(backend.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(backend.status().message().find(expected), std::string::npos) << backend.status();
  };
  refused_option(15, 0,
                 "BackendOptions.q_row_stride = 15 is invalid: must be 0 (dense rows) or "
                 "in [16 (q_heads x head_dim), 2147483648]");
  refused_option(0, -16, "BackendOptions.out_row_stride = -16 is invalid");
  refused_option(kMaxRowStride + 1, 0, "BackendOptions.q_row_stride = 2147483649 is invalid");
  refused_option(0, kMaxRowStride + 1, "BackendOptions.out_row_stride = 2147483649 is invalid");
  BackendOptions widest;
  widest.q_row_stride = widest.out_row_stride = kMaxRowStride;
  EXPECT_TRUE(CreateCpuDecodeBackend(BindingFor(*f.cache), shape, widest).ok());
  std::unique_ptr<DecodeAttentionBackend> backend = PlannedWithStrides(f, shape, 24, 16);
  std::vector<float> memory(100, 0.5f);
  const std::vector<float> before = memory;
  ExpectOneBufferWithTwoStridesRefused(*backend, &memory, 24, 16);
  // q spans elements [0, 40) (rows at 0 and 24), out [39, 71): one element shared.
  absl::Status s = backend->Run(0, memory.data(), memory.data() + 39, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find(") overlaps out ["), std::string::npos) << s;
  EXPECT_EQ(memory, before);
  EXPECT_TRUE(backend->Run(0, memory.data(), memory.data() + 40, nullptr).ok());
  EXPECT_NE(memory, before);
}

// In place, q and out with two strides are refused whichever is the wider; q and out apart are
// checked each with its own stride: out's wider rows reach bytes that q's stride would not,
// and the message gives both spans.
TEST(CpuDecodeBackendTest, OverlapsAreFoundThroughEitherStride) {
  std::mt19937 rng(25);
  Fixture f = MakeCache(1, 8, 8, QuantMode::kSymmetric, {3, 2}, rng);
  const AttentionShape shape{2, 1, 8, 2, 3, 0};  // rows of 16 elements
  std::unique_ptr<DecodeAttentionBackend> backend = PlannedWithStrides(f, shape, 16, 24);
  std::vector<float> memory(100, 0.5f);
  const std::vector<float> before = memory;
  ExpectOneBufferWithTwoStridesRefused(*backend, &memory, 16, 24);
  // out spans elements [0, 40) (rows at 0 and 24), q [39, 71): one element shared, which a
  // span taken with q's stride (out ending at 32) would miss.
  const float* q = memory.data() + 39;
  absl::Status s = backend->Run(0, q, memory.data(), nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  auto at = [](const float* p) { return absl::Hex(reinterpret_cast<uintptr_t>(p)); };
  EXPECT_EQ(s.message(), absl::StrCat("q [", at(q), ", ", at(q + 32), ") overlaps out [",
                                      at(memory.data()), ", ", at(memory.data() + 40),
                                      "): give one buffer for attention in place, or two apart"));
  EXPECT_EQ(memory, before);
  EXPECT_TRUE(backend->Run(0, memory.data() + 40, memory.data(), nullptr).ok());
  EXPECT_NE(memory, before);
}

// The entry point by name, and rows out of range at Plan; a padded row's request is never
// looked at, whatever it holds.
TEST(CpuDecodeBackendTest, CreatedByNameAndRowsOutOfRangeRefused) {
  std::mt19937 rng(10);
  Fixture f = MakeCache(1, 8, 8, QuantMode::kSymmetric, {3}, rng);
  const AttentionShape shape{1, 1, 8, 2, 3, 0};
  const auto unknown = CreateDecodeAttentionBackend("tpu", BindingFor(*f.cache), shape, {});
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(unknown.status().message(), "backend name 'tpu' is unknown: must be cpu or cuda");
  auto backend = *CreateDecodeAttentionBackend("cpu", BindingFor(*f.cache), shape, {});
  EXPECT_EQ(backend->name(), "cpu");
  EXPECT_EQ(backend->memory().device_bytes, 0);  // nothing of CUDA's
  EXPECT_EQ(backend->memory().pinned_host_bytes, 0);
  absl::Status s = backend->Plan(std::vector<DecodeRow>{{0, 1}, {0, -1}}, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "rows[1].seq_len = -1 is out of range [0, 3] (AttentionShape.max_seq_len)");
  s = backend->Plan(std::vector<DecodeRow>{{-2, 1}}, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "rows[0].request = -2 is out of range [0, 1) (KvCacheBinding.max_requests)");
  // One past the table's last row, with a binding made by hand (no request bookkeeping): the
  // range check alone keeps Run from reading past the table.
  KvCacheBinding by_hand = BindingFor(*f.cache);
  by_hand.requests = nullptr;
  auto unchecked = *CreateDecodeAttentionBackend("cpu", by_hand, shape, {});
  s = unchecked->Plan(std::vector<DecodeRow>{{1, 1}}, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "rows[0].request = 1 is out of range [0, 1) (KvCacheBinding.max_requests)");
  ASSERT_TRUE(backend->Plan(std::vector<DecodeRow>{{0, 3}, {INT_MIN, 0}}, nullptr).ok());
  const std::vector<float> q(16, 0.5f);
  std::vector<float> out(16, std::nanf(""));
  ASSERT_TRUE(backend->Run(1, q.data(), out.data(), nullptr).ok());
  for (int d = 0; d < 8; ++d) {
    EXPECT_FALSE(std::isnan(out[d])) << d;
    EXPECT_EQ(out[8 + d], 0.0f) << d;
  }
}

}  // namespace
}  // namespace int4kv
