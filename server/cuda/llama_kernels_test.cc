// The small kernels against float64 references computed from the same (rounded) inputs, with
// poisoned outputs, odd sizes and both half types.
#include "server/cuda/llama_kernels.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "common/cuda_check.h"
#include "gtest/gtest.h"
#include "server/cuda/testing/device_test_util.h"
#include "server/sampler.h"

namespace int4kv {
namespace {

class LlamaKernelsTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  }
  DType dtype() const { return GetParam(); }
  std::mt19937 rng_{2025};
};

// |got - want| within one rounding to dtype (plus float32 arithmetic slack).
void ExpectClose(const std::vector<float>& got, const std::vector<double>& want, DType dtype,
                 double abs_slack = 1e-5) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_FALSE(std::isnan(got[i])) << "element " << i << " was not written";
    EXPECT_NEAR(got[i], want[i], std::abs(want[i]) * HalfEpsilon(dtype) * 1.01 + abs_slack)
        << "element " << i;
  }
}

TEST_P(LlamaKernelsTest, ConvertRoundsToNearestEven) {
  std::vector<float> in = RandomFloats(1000, rng_, 100.0f);
  in.push_back(65504.0f);
  in.push_back(1e-7f);
  DeviceBuffer device_in = Upload(in, DType::kFloat32);
  DeviceBuffer out = Poisoned(in.size(), dtype());
  ASSERT_TRUE(
      LaunchConvertFloat(device_in.as<float>(), in.size(), dtype(), out.get(), nullptr).ok());
  const std::vector<float> got = Download(out, in.size(), dtype());
  const std::vector<float> want = RoundTo(in, dtype());
  for (size_t i = 0; i < in.size(); ++i) EXPECT_EQ(got[i], want[i]) << i;
}

TEST_P(LlamaKernelsTest, EmbeddingGathersRows) {
  const int32_t vocab = 50, dim = 37;
  const std::vector<float> table = RoundTo(RandomFloats(vocab * dim, rng_), dtype());
  const std::vector<TokenMeta> meta = {{7, 0, 0}, {0, 1, 0}, {49, 2, 0}, {7, 3, 0}};
  DeviceBuffer device_table = Upload(table, dtype());
  DeviceBuffer device_meta = UploadRaw(meta);
  DeviceBuffer x = Poisoned(meta.size() * dim, DType::kFloat32);
  ASSERT_TRUE(LaunchEmbedding(device_table.get(), dtype(), device_meta.as<TokenMeta>(), meta.size(),
                              dim, x.as<float>(), nullptr)
                  .ok());
  const std::vector<float> got = Download(x, meta.size() * dim, DType::kFloat32);
  for (size_t r = 0; r < meta.size(); ++r) {
    for (int32_t d = 0; d < dim; ++d) {
      EXPECT_EQ(got[r * dim + d], table[meta[r].token * dim + d]) << r << "," << d;
    }
  }
}

TEST_P(LlamaKernelsTest, RmsNormMatchesReferenceWithAndWithoutGather) {
  const int32_t rows = 5, dim = 300;  // dim not a multiple of the block size
  const float eps = 1e-5f;
  const std::vector<float> x = RandomFloats(rows * dim, rng_, 3.0f);
  const std::vector<float> weight = RandomFloats(dim, rng_, 2.0f);
  DeviceBuffer device_x = Upload(x, DType::kFloat32);
  DeviceBuffer device_w = Upload(weight, DType::kFloat32);
  const std::vector<TokenMeta> gather = {{0, 0, 4}, {0, 0, 1}, {0, 0, 4}};
  DeviceBuffer device_meta = UploadRaw(gather);
  for (const bool gathered : {false, true}) {
    const int32_t out_rows = gathered ? static_cast<int32_t>(gather.size()) : rows;
    DeviceBuffer out = Poisoned(out_rows * dim, dtype());
    ASSERT_TRUE(LaunchRmsNorm(device_x.as<float>(),
                              gathered ? device_meta.as<TokenMeta>() : nullptr,
                              device_w.as<float>(), out_rows, dim, eps, dtype(), out.get(), nullptr)
                    .ok());
    std::vector<double> want(out_rows * dim);
    for (int32_t r = 0; r < out_rows; ++r) {
      const int32_t s = gathered ? gather[r].logit_row : r;
      double sum = 0;
      for (int32_t d = 0; d < dim; ++d) sum += double{x[s * dim + d]} * x[s * dim + d];
      const double inv = 1.0 / std::sqrt(sum / dim + eps);
      for (int32_t d = 0; d < dim; ++d) want[r * dim + d] = x[s * dim + d] * inv * weight[d];
    }
    ExpectClose(Download(out, out_rows * dim, dtype()), want, dtype());
  }
}

TEST_P(LlamaKernelsTest, RopeRotatesQueriesOutOfPlaceAndKeysInPlace) {
  const int32_t rows = 3, q_heads = 4, kv_heads = 2, head_dim = 16;
  const float theta = 10000.0f;
  const int32_t q_dim = q_heads * head_dim, kv_dim = kv_heads * head_dim;
  const int32_t qkv_dim = q_dim + 2 * kv_dim;
  const std::vector<float> qkv = RoundTo(RandomFloats(rows * qkv_dim, rng_), dtype());
  const std::vector<TokenMeta> meta = {{0, 0, 0}, {0, 7, 0}, {0, 1000, 0}};
  DeviceBuffer device_qkv = Upload(qkv, dtype());
  DeviceBuffer device_meta = UploadRaw(meta);
  DeviceBuffer q_out = Poisoned(rows * q_dim, dtype());
  ASSERT_TRUE(LaunchRope(device_qkv.get(), device_meta.as<TokenMeta>(), rows, q_heads, kv_heads,
                         head_dim, theta, dtype(), q_out.get(), nullptr)
                  .ok());
  const std::vector<float> got_q = Download(q_out, rows * q_dim, dtype());
  const std::vector<float> got_qkv = Download(device_qkv, rows * qkv_dim, dtype());
  std::vector<double> want_q(rows * q_dim), want_qkv(qkv.begin(), qkv.end());
  for (int32_t r = 0; r < rows; ++r) {
    for (int32_t head = 0; head < q_heads + kv_heads; ++head) {
      for (int32_t i = 0; i < head_dim; i += 2) {
        const double angle = meta[r].position * std::pow(double{theta}, -double(i) / head_dim);
        const double c = std::cos(angle), s = std::sin(angle);
        const float* pair = &qkv[r * qkv_dim + head * head_dim + i];
        const double a = pair[0] * c - pair[1] * s, b = pair[0] * s + pair[1] * c;
        if (head < q_heads) {
          want_q[r * q_dim + head * head_dim + i] = a;
          want_q[r * q_dim + head * head_dim + i + 1] = b;
        } else {
          want_qkv[r * qkv_dim + head * head_dim + i] = a;
          want_qkv[r * qkv_dim + head * head_dim + i + 1] = b;
        }
      }
    }
  }
  // Float32 angles at position 1000 are off by ~1e-4 rad: allow that on top of the rounding.
  ExpectClose(got_q, want_q, dtype(), 2e-4);
  ExpectClose(got_qkv, want_qkv, dtype(), 2e-4);  // Q part unchanged, K rotated, V unchanged
}

TEST_P(LlamaKernelsTest, SwiGluMatchesReference) {
  const int32_t rows = 3, hidden = 37;
  const std::vector<float> gate_up = RoundTo(RandomFloats(rows * 2 * hidden, rng_, 4.0f), dtype());
  DeviceBuffer device_in = Upload(gate_up, dtype());
  DeviceBuffer out = Poisoned(rows * hidden, dtype());
  ASSERT_TRUE(LaunchSwiGlu(device_in.get(), rows, hidden, dtype(), out.get(), nullptr).ok());
  std::vector<double> want(rows * hidden);
  for (int32_t r = 0; r < rows; ++r) {
    for (int32_t j = 0; j < hidden; ++j) {
      const double g = gate_up[r * 2 * hidden + j], u = gate_up[r * 2 * hidden + hidden + j];
      want[r * hidden + j] = g / (1.0 + std::exp(-g)) * u;
    }
  }
  ExpectClose(Download(out, rows * hidden, dtype()), want, dtype());
}

INSTANTIATE_TEST_SUITE_P(HalfTypes, LlamaKernelsTest,
                         ::testing::Values(DType::kFloat16, DType::kBFloat16),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(DTypeName(info.param));
                         });

// The device argmax is the host ArgMax (sampler.h): ties to the lowest id, NaN never wins,
// an all-NaN row gives -1.
TEST(ArgMaxKernelTest, AgreesWithHostArgMax) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(3);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (const int32_t vocab : {1, 3, 255, 256, 1000, 32000}) {
    std::vector<std::vector<float>> rows;
    rows.push_back(RandomFloats(vocab, rng, 10.0f));
    std::vector<float> ties(vocab, 1.0f);
    ties[vocab / 2] = 5.0f;
    ties[vocab - 1] = 5.0f;
    rows.push_back(ties);
    std::vector<float> with_nan = RandomFloats(vocab, rng, 10.0f);
    with_nan[0] = nan;
    with_nan[vocab / 3] = nan;
    rows.push_back(with_nan);
    rows.push_back(std::vector<float>(vocab, nan));
    std::vector<float> negative(vocab, -inf);
    negative[vocab - 1] = -1e30f;
    rows.push_back(negative);
    std::vector<float> flat;
    for (const std::vector<float>& row : rows) flat.insert(flat.end(), row.begin(), row.end());
    DeviceBuffer logits = Upload(flat, DType::kFloat32);
    DeviceBuffer out = Poisoned(rows.size(), DType::kFloat32);
    ASSERT_TRUE(
        LaunchArgMax(logits.as<float>(), rows.size(), vocab, out.as<int32_t>(), nullptr).ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<int32_t> got(rows.size());
    ASSERT_EQ(cudaMemcpy(got.data(), out.get(), got.size() * 4, cudaMemcpyDeviceToHost),
              cudaSuccess);
    for (size_t r = 0; r < rows.size(); ++r) {
      EXPECT_EQ(got[r], ArgMax(rows[r])) << "vocab " << vocab << ", row " << r;
    }
  }
}

}  // namespace
}  // namespace int4kv
