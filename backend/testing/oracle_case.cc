#include "backend/testing/oracle_case.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "backend/cpu_decode_backend.h"
#include "backend/cuda_decode_backend.h"
#include "backend/testing/cuda_assert.h"
#include "common/half_dtype.h"
#include "gtest/gtest.h"

namespace int4kv {
std::string Describe(const Case& c) {
  std::string lengths;
  for (int len : c.lengths) lengths += std::to_string(len) + ",";
  return absl::StrCat("head_dim ", c.head_dim, " kv_heads ", c.kv_heads, " G ", c.group,
                      " group_size ", c.group_size, " ", QuantModeName(c.mode), " params ",
                      ParamDtypeName(c.params), " io ", DTypeName(c.io), " permuted ", c.permuted,
                      " in place ", c.in_place, " constant q ", c.constant_q,
                      " batch-invariant splits ", c.batch_invariant_splits, " logit soft cap ",
                      c.logit_soft_cap, " lengths ", lengths);
}

// Random q in the io dtype (host bits and their exact float values).
void RandomQuery(size_t n, DType io, float scale, std::mt19937& rng, std::vector<uint16_t>* bits,
                 std::vector<float>* values) {
  std::normal_distribution<float> normal;
  bits->resize(n);
  values->resize(n);
  for (size_t i = 0; i < n; ++i) {
    (*bits)[i] = ToHalfBits(normal(rng) * scale, io);
    (*values)[i] = FromHalfBits((*bits)[i], io);
  }
}

// Checks the device output against the oracle row by row: no NaN, rows that attend nothing exactly
// zero, and a relative error (norm of the difference over the norm of the oracle's row) of at most
// 2e-3 beyond what rounding the exact result to the io dtype costs by itself. That rounding
// is about 2e-4 of a row for fp16 but 1.7e-3 for bf16 (8 significant bits), and 1.98e-3 was
// measured on a one-token row (256 distinct values), so a plain 2e-3 bound would measure
// the dtype rather than the kernel; and rounding the oracle too does not help, since a
// kernel error far below a bf16 step still moves some outputs a whole step.
void ExpectClose(const std::vector<uint16_t>& got_bits, DType io, const std::vector<float>& want,
                 const std::vector<DecodeRow>& rows, int row_size, const std::string& what) {
  double worst = 0, worst_beyond_dtype = 0;
  for (size_t b = 0; b < rows.size(); ++b) {
    double diff = 0, rounding = 0, norm = 0;
    for (int i = 0; i < row_size; ++i) {
      const float got = FromHalfBits(got_bits[b * row_size + i], io);
      ASSERT_FALSE(std::isnan(got)) << what << " row " << b << " element " << i;
      const double w = want[b * row_size + i];
      if (rows[b].attended_tokens() == 0) {
        ASSERT_EQ(got, 0.0f) << what << " row " << b << " attends no token";
        continue;
      }
      const double rounded = FromHalfBits(ToHalfBits(static_cast<float>(w), io), io);
      diff += (got - w) * (got - w);
      rounding += (rounded - w) * (rounded - w);
      norm += w * w;
    }
    if (rows[b].attended_tokens() == 0) continue;
    const double error = std::sqrt(diff / norm);
    const double dtype_error = std::sqrt(rounding / norm);
    worst = std::max(worst, error);
    worst_beyond_dtype = std::max(worst_beyond_dtype, error - dtype_error);
    EXPECT_LE(error, 2e-3 + dtype_error)
        << what << " row " << b << " seq_len " << rows[b].seq_len << ": the io dtype's rounding of "
        << "the exact result alone is " << dtype_error;
  }
  ::testing::Test::RecordProperty("worst_relative_error", std::to_string(worst));
  std::printf("worst row relative error %.3e, beyond the io dtype's rounding %.3e (%s)\n", worst,
              worst_beyond_dtype, what.c_str());
}

void ExpectLseClose(const std::vector<float>& got, const std::vector<float>& want,
                    const std::vector<DecodeRow>& rows, int q_heads, const std::string& what) {
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const size_t row = i / q_heads;
    if (rows[row].attended_tokens() == 0) {
      ASSERT_EQ(got[i], -INFINITY) << what << " row " << row << " attends no token";
      continue;
    }
    ASSERT_TRUE(std::isfinite(got[i])) << what << " row " << row << " lse " << got[i];
    const double error = std::abs(double{got[i]} - want[i]);
    const double bound = kLseAbsoluteError + kLseRelativeError * std::abs(want[i]);
    worst = std::max(worst, error / bound);
    EXPECT_LE(error, bound) << what << " row " << row << " head " << i % q_heads << ": lse "
                            << got[i] << ", oracle " << want[i];
  }
  std::printf("worst lse error %.2f of the bound (%s)\n", worst, what.c_str());
}

namespace {

// Layer 1 again through RunWithLse, on the same plan: its output must be bitwise `plain_out`
// (the plain Run's), and its lse close to the oracle's (ExpectLseClose).
void CheckLseRun(DecodeAttentionBackend& cuda, DecodeAttentionBackend& oracle,
                 const std::vector<uint16_t>& q_bits, const std::vector<float>& q_values,
                 DeviceBuffers& buffers, bool in_place, const std::vector<DecodeRow>& rows,
                 const std::vector<uint16_t>& plain_out, cudaStream_t stream) {
  const size_t n = q_bits.size(), heads = rows.size() * cuda.shape().q_heads;
  DeviceBuffer lse;
  ASSERT_TRUE(lse.Allocate(std::max<size_t>(1, heads) * sizeof(float), "the test's lse").ok());
  // The plain Run overwrote q when in place.
  ASSERT_CUDA(cudaMemcpyAsync(buffers.q, q_bits.data(), n * 2, cudaMemcpyHostToDevice, stream));
  uint16_t* out = in_place ? buffers.q : buffers.out;
  if (!in_place) {
    ASSERT_CUDA(cudaMemsetAsync(out, 0xff, n * 2, stream));
  }
  ASSERT_CUDA(cudaMemsetAsync(lse.get(), 0xff, heads * sizeof(float), stream));  // NaN
  ASSERT_TRUE(cuda.RunWithLse(1, buffers.q, out, lse.as<float>(), stream).ok());
  ASSERT_CUDA(cudaStreamSynchronize(stream));
  std::vector<uint16_t> got(n);
  ASSERT_CUDA(cudaMemcpy(got.data(), out, n * 2, cudaMemcpyDeviceToHost));
  EXPECT_EQ(got, plain_out) << "RunWithLse's output differs from Run's";
  std::vector<float> got_lse(heads), want_out(n), want_lse(heads);
  ASSERT_CUDA(cudaMemcpy(got_lse.data(), lse.get(), heads * sizeof(float), cudaMemcpyDeviceToHost));
  ASSERT_TRUE(oracle.Plan(rows, nullptr).ok());
  ASSERT_TRUE(
      oracle.RunWithLse(1, q_values.data(), want_out.data(), want_lse.data(), nullptr).ok());
  ExpectLseClose(got_lse, want_lse, rows, cuda.shape().q_heads, "layer 1");
}

}  // namespace

// Runs both layers of case `c` over `rows` on the CUDA backend reading `device`, on a stream
// of its own, and checks them against the float64 oracle reading `host` (the host mirror of
// a cache of `config`). before_run, when set, is enqueued on that stream between Plan and Run.
void CheckBindingsAgainstOracle(const Case& c, const KvCacheConfig& config,
                                const KvCacheBinding& device, const KvCacheBinding& host,
                                const std::vector<DecodeRow>& rows, std::mt19937& rng,
                                const std::function<void(cudaStream_t)>& before_run) {
  AttentionShape shape{c.kv_heads * c.group, c.kv_heads, c.head_dim,      config.max_requests,
                       config.max_seq_len,   0,          c.logit_soft_cap};
  BackendOptions cuda_options;
  cuda_options.io_dtype = c.io;
  cuda_options.batch_invariant_splits = c.batch_invariant_splits;
  auto cuda = CreateCudaDecodeBackend(device, shape, cuda_options);
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  BackendOptions oracle_options;
  oracle_options.cpu_float64 = true;
  auto oracle = *CreateCpuDecodeBackend(host, shape, oracle_options);

  const size_t row_size = static_cast<size_t>(shape.q_heads) * c.head_dim;
  const size_t n = rows.size() * row_size;
  DeviceBuffers buffers(n);
  cudaStream_t stream;
  ASSERT_CUDA(cudaStreamCreate(&stream));
  for (int layer = 0; layer < 2; ++layer) {
    std::vector<uint16_t> q_bits;
    std::vector<float> q_values;
    if (c.constant_q) {
      q_bits.assign(n, ToHalfBits(c.q_scale, c.io));
      q_values.assign(n, c.q_scale);
    } else {
      RandomQuery(n, c.io, c.q_scale, rng, &q_bits, &q_values);
    }
    ASSERT_CUDA(cudaMemcpyAsync(buffers.q, q_bits.data(), n * 2, cudaMemcpyHostToDevice, stream));
    uint16_t* out = c.in_place ? buffers.q : buffers.out;
    // poison: NaN in fp16 and bf16 (in place, the queries themselves must be overwritten)
    if (!c.in_place) {
      ASSERT_CUDA(cudaMemsetAsync(out, 0xff, n * 2, stream));
    }
    ASSERT_TRUE((*cuda)->Plan(rows, stream).ok());
    if (before_run) before_run(stream);
    ASSERT_TRUE((*cuda)->Run(layer, buffers.q, out, stream).ok());
    ASSERT_CUDA(cudaStreamSynchronize(stream));
    std::vector<uint16_t> got(n);
    ASSERT_CUDA(cudaMemcpy(got.data(), out, n * 2, cudaMemcpyDeviceToHost));
    std::vector<float> want(n);
    ASSERT_TRUE(oracle->Plan(rows, nullptr).ok());
    ASSERT_TRUE(oracle->Run(layer, q_values.data(), want.data(), nullptr).ok());
    ExpectClose(got, c.io, want, rows, static_cast<int>(row_size), absl::StrCat("layer ", layer));
    if (layer == 1) {
      CheckLseRun(**cuda, *oracle, q_bits, q_values, buffers, c.in_place, rows, got, stream);
    }
  }
  ASSERT_CUDA(cudaStreamDestroy(stream));
}

// CheckBindingsAgainstOracle over the bindings of `caches`.
void CheckAgainstOracle(const Case& c, MirroredCache& caches, const std::vector<DecodeRow>& rows,
                        std::mt19937& rng, const std::function<void(cudaStream_t)>& before_run) {
  CheckBindingsAgainstOracle(c, caches.host().config(), BindingFor(caches.device()),
                             BindingFor(caches.host()), rows, rng, before_run);
}

// CheckBindingsAgainstOracle over the pools of `caches` read through explicit page tables
// instead of their request tables: `device_entries` (copied to the device) for the kernel and
// `host_entries` for the oracle, each [max_requests][max_seq_len] of the caches' config.
void CheckTablesAgainstOracle(const Case& c, MirroredCache& caches,
                              const std::vector<int32_t>& device_entries,
                              const std::vector<int32_t>& host_entries,
                              const std::vector<DecodeRow>& rows, std::mt19937& rng) {
  const DeviceBuffer device_table = CopyToDevice(device_entries);
  KvCacheBinding device = BindingFor(caches.device());
  device.req_to_token = device_table.as<int32_t>();
  device.requests = nullptr;
  KvCacheBinding host = BindingFor(caches.host());
  host.req_to_token = host_entries.data();
  host.requests = nullptr;
  CheckBindingsAgainstOracle(c, caches.host().config(), device, host, rows, rng);
}

// The tokens of a case's batch (at least 1, as a pool size).
int64_t CaseTokens(const Case& c) {
  return std::max<int64_t>(1, std::accumulate(c.lengths.begin(), c.lengths.end(), int64_t{0}));
}

// Caches for case `c`: max_batch its row count, max_seq_len its longest row, and a pool of
// just the batch's tokens (filling it is most of a case's time).
MirroredCache CachesFor(const Case& c, std::mt19937& rng) {
  const int max_batch = static_cast<int>(c.lengths.size());
  const int max_seq_len = std::max(1, *std::max_element(c.lengths.begin(), c.lengths.end()));
  return MirroredCache(c, max_batch, max_seq_len, CaseTokens(c), rng);
}

void RunCase(const Case& c, std::mt19937& rng) {
  SCOPED_TRACE(Describe(c));
  MirroredCache caches = CachesFor(c, rng);
  const std::vector<DecodeRow> rows = caches.NewBatch(c.lengths, c.permuted, rng);
  CheckAgainstOracle(c, caches, rows, rng);
}

}  // namespace int4kv
