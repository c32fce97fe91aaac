// GPU test: the CUDA quantizer and dequantizer write exactly the CPU versions' bytes. Each
// case that launches skips without a CUDA device; the argument checks before any launch run
// everywhere.
#include "kv_cache/store_kv_cuda.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "common/cuda_check.h"
#include "common/half.h"
#include "common/half_dtype.h"
#include "gtest/gtest.h"
#include "kv_cache/kv_cache.h"
#include "kv_cache/store_kv.h"

namespace int4kv {
namespace {

template <typename T>
T* ToDevice(const std::vector<T>& host) {
  T* device = nullptr;
  EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&device), host.size() * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
            cudaSuccess);
  return device;
}

template <typename T>
std::vector<T> ToHost(const T* device, size_t count) {
  std::vector<T> host(count);
  EXPECT_EQ(cudaMemcpy(host.data(), device, count * sizeof(T), cudaMemcpyDeviceToHost),
            cudaSuccess);
  return host;
}

struct Case {
  ParamDtype param;
  QuantMode mode;
  int group;
  int head_dim;
  DType input;
};

TEST(StoreKvCudaTest, BytesIdenticalToCpu) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  std::vector<Case> cases;
  for (ParamDtype param : {ParamDtype::kFloat16, ParamDtype::kBFloat16}) {
    for (QuantMode mode : {QuantMode::kSymmetric, QuantMode::kAsymmetric}) {
      for (int group : {8, 16, 32, 64, 128}) {
        for (DType input : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
          cases.push_back({param, mode, group, group == 8 ? 8 : 128, input});
        }
      }
    }
  }
  cases.push_back({ParamDtype::kFloat16, QuantMode::kSymmetric, 8, 256, DType::kFloat16});
  std::mt19937 rng(42);
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message()
                 << "param " << static_cast<int>(c.param) << " mode " << static_cast<int>(c.mode)
                 << " group " << c.group << " head_dim " << c.head_dim << " input "
                 << DTypeName(c.input));
    KvCacheConfig config;
    config.num_layers = 2;
    config.kv_heads = 4;
    config.head_dim = c.head_dim;
    config.group_size = c.group;
    config.param_dtype = c.param;
    config.quant_mode = c.mode;
    config.capacity_slots = 300;
    config.max_requests = 4;
    config.max_seq_len = 300;
    auto host = *KvCache::Create(config, MemoryKind::kHost);
    auto device = *KvCache::Create(config, MemoryKind::kDevice);

    const int tokens = 257;
    const size_t count = static_cast<size_t>(tokens) * 4 * c.head_dim;
    std::vector<float> k(count), v(count);
    std::normal_distribution<float> normal;
    for (size_t i = 0; i < count; ++i) {
      const float magnitude = std::pow(10.0f, static_cast<float>(i % 9) - 4.0f);
      k[i] = normal(rng) * magnitude;
      v[i] = normal(rng);
    }
    // Specials: zeros group, ties, huge, non-finite.
    for (int i = 0; i < c.group; ++i) k[i] = 0.0f;
    k[c.group] = std::numeric_limits<float>::infinity();
    k[c.group + 1] = std::numeric_limits<float>::quiet_NaN();
    k[2 * c.group] = 3e38f;
    k[2 * c.group + 1] = 1e-40f;
    std::vector<uint16_t> k16(count), v16(count);
    for (size_t i = 0; i < count; ++i) {
      k16[i] = ToHalfBits(k[i], c.input);
      v16[i] = ToHalfBits(v[i], c.input);
    }
    const bool wide = c.input == DType::kFloat32;
    KvRows host_rows{wide ? static_cast<const void*>(k.data()) : k16.data(),
                     wide ? static_cast<const void*>(v.data()) : v16.data(), c.input, 0};
    std::vector<int32_t> slots(tokens);
    for (int i = 0; i < tokens; ++i) slots[i] = 1 + (i * 37) % 300;  // a permutation
    ASSERT_TRUE(StoreKvHost(host->view(), 1, slots, host_rows).ok());

    void* dk = wide ? static_cast<void*>(ToDevice(k)) : ToDevice(k16);
    void* dv = wide ? static_cast<void*>(ToDevice(v)) : ToDevice(v16);
    int32_t* dslots = ToDevice(slots);
    KvRows device_rows{dk, dv, c.input, 0};
    ASSERT_TRUE(StoreKvCuda(device->view(), 1, dslots, tokens, device_rows, nullptr).ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

    const KvLayout& layout = host->view().layout;
    EXPECT_EQ(ToHost(device->view().data, layout.DataPoolBytes()),
              std::vector<uint8_t>(host->view().data, host->view().data + layout.DataPoolBytes()));
    EXPECT_EQ(ToHost(device->view().scales, layout.ParamPoolElements()),
              std::vector<uint16_t>(host->view().scales,
                                    host->view().scales + layout.ParamPoolElements()));
    if (c.mode == QuantMode::kAsymmetric) {
      EXPECT_EQ(ToHost(device->view().zeros, layout.ParamPoolElements()),
                std::vector<uint16_t>(host->view().zeros,
                                      host->view().zeros + layout.ParamPoolElements()));
    }

    // Dequantize on both sides; outputs are poisoned first and must match bit for bit.
    const size_t out_count = static_cast<size_t>(tokens) * 8 * c.head_dim;
    std::vector<float> host_out(out_count, std::numeric_limits<float>::quiet_NaN());
    ASSERT_TRUE(DequantizeHost(host->view(), 1, slots, host_out.data()).ok());
    float* dout = ToDevice(std::vector<float>(out_count, std::numeric_limits<float>::quiet_NaN()));
    ASSERT_TRUE(DequantizeCuda(device->view(), 1, dslots, tokens, dout, nullptr).ok());
    const std::vector<float> device_out = ToHost(dout, out_count);
    ASSERT_EQ(std::memcmp(device_out.data(), host_out.data(), out_count * 4), 0);
    for (float x : device_out) ASSERT_TRUE(std::isfinite(x));
    cudaFree(dk);
    cudaFree(dv);
    cudaFree(dslots);
    cudaFree(dout);
  }
}

// As the model stores them: K and V rows inside a fused [token][q | k | v] projection output
// (token_stride = the fused row), and padded rows that all write slot 0 with the same values.
TEST(StoreKvCudaTest, FusedRowsAndPaddedRowsMatchCpu) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  KvCacheConfig config;
  config.num_layers = 2;
  config.kv_heads = 2;
  config.head_dim = 64;
  config.capacity_slots = 16;
  config.max_requests = 2;
  config.max_seq_len = 16;
  auto host = *KvCache::Create(config, MemoryKind::kHost);
  auto device = *KvCache::Create(config, MemoryKind::kDevice);
  const int q_dim = 8 * 64, kv_dim = 2 * 64, fused = q_dim + 2 * kv_dim;
  const std::vector<int32_t> slots = {5, 0, 7, 0, 0, 3, 9, 0, 1};
  const int tokens = static_cast<int>(slots.size());
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  std::vector<uint16_t> qkv(static_cast<size_t>(tokens) * fused);
  for (uint16_t& x : qkv) x = FloatToHalfBits(normal(rng));
  for (int t = 2; t < tokens; ++t) {  // padded rows: token 1's values
    if (slots[t] == 0) std::copy_n(qkv.begin() + fused, fused, qkv.begin() + t * fused);
  }
  ASSERT_TRUE(
      StoreKvHost(host->view(), 1, slots,
                  KvRows{qkv.data() + q_dim, qkv.data() + q_dim + kv_dim, DType::kFloat16, fused})
          .ok());
  uint16_t* dqkv = ToDevice(qkv);
  int32_t* dslots = ToDevice(slots);
  ASSERT_TRUE(StoreKvCuda(device->view(), 1, dslots, tokens,
                          KvRows{dqkv + q_dim, dqkv + q_dim + kv_dim, DType::kFloat16, fused},
                          nullptr)
                  .ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const KvLayout& layout = host->view().layout;
  EXPECT_EQ(ToHost(device->view().data, layout.DataPoolBytes()),
            std::vector<uint8_t>(host->view().data, host->view().data + layout.DataPoolBytes()));
  EXPECT_EQ(
      ToHost(device->view().scales, layout.ParamPoolElements()),
      std::vector<uint16_t>(host->view().scales, host->view().scales + layout.ParamPoolElements()));
  // The rows did land: slot 5 holds token 0's K, not zeros.
  const std::vector<uint16_t> scales = ToHost(device->view().scales, layout.ParamPoolElements());
  EXPECT_NE(scales[layout.ParamOffset(1, 5, 0)], 0);
  cudaFree(dqkv);
  cudaFree(dslots);
}

// A device cache of one KV head of 16 dims and 4 slots.
std::unique_ptr<KvCache> SmallDeviceCache() {
  KvCacheConfig config;
  config.kv_heads = 1;
  config.head_dim = 16;
  config.capacity_slots = 4;
  return *KvCache::Create(config, MemoryKind::kDevice);
}

TEST(StoreKvCudaTest, OutOfRangeSlotsAreSkipped) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  std::unique_ptr<KvCache> device = SmallDeviceCache();
  const std::vector<float> k(3 * 16, 1.5f);
  float* dk = ToDevice(k);
  int32_t* dslots = ToDevice(std::vector<int32_t>{-1, 5, 1000000});
  ASSERT_TRUE(
      StoreKvCuda(device->view(), 0, dslots, 3, KvRows{dk, dk, DType::kFloat32, 0}, nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  for (uint8_t b : ToHost(device->view().data, device->view().layout.DataPoolBytes())) {
    ASSERT_EQ(b, 0);
  }
  cudaFree(dk);
  cudaFree(dslots);
}

// The caller's counter gets one for each skipped token (not one per row or group), across
// stores, while the in-range tokens of the same store are written; a misaligned counter is
// refused before any launch.
TEST(StoreKvCudaTest, SkippedTokensAreCounted) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  std::unique_ptr<KvCache> device = SmallDeviceCache();
  const KvCacheView& view = device->view();
  ASSERT_GT(view.layout.GroupsPerRow() * view.layout.RowsPerSlot(), 1)
      << "a token must span several threads for the count to tell tokens from threads";
  const std::vector<float> k(4 * 16, 1.5f);
  float* dk = ToDevice(k);
  const KvRows rows{dk, dk, DType::kFloat32, 0};
  const int32_t past_end = static_cast<int32_t>(view.layout.num_slots);
  int32_t* first_slots = ToDevice(std::vector<int32_t>{-1, past_end, 1000000});
  int32_t* second_slots = ToDevice(std::vector<int32_t>{2, -7, 3, past_end + 1});
  int32_t* counter = ToDevice(std::vector<int32_t>{0, 0});
  ASSERT_TRUE(
      StoreKvCuda(view, 0, first_slots, 3, rows, nullptr, QuantRounding::kNearestEven, counter)
          .ok());
  ASSERT_TRUE(
      StoreKvCuda(view, 0, second_slots, 4, rows, nullptr, QuantRounding::kNearestEven, counter)
          .ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(ToHost(counter, 1)[0], 5);  // 3 of the first store's tokens, 2 of the second's
  const std::vector<uint8_t> data = ToHost(view.data, view.layout.DataPoolBytes());
  auto slot_written = [&](int32_t slot) {
    const auto row = data.begin() + view.layout.DataOffset(0, slot, 0);
    return std::any_of(row, row + view.layout.RowBytes(), [](uint8_t b) { return b != 0; });
  };
  EXPECT_TRUE(slot_written(2));
  EXPECT_TRUE(slot_written(3));
  EXPECT_FALSE(slot_written(1));

  int32_t* odd_counter = reinterpret_cast<int32_t*>(reinterpret_cast<char*>(counter) + 2);
  const absl::Status status = StoreKvCuda(view, 0, second_slots, 4, rows, nullptr,
                                          QuantRounding::kNearestEven, odd_counter);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("skipped_tokens = 0x"), std::string::npos) << status;
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(ToHost(counter, 2), (std::vector<int32_t>{5, 0}));
  cudaFree(dk);
  cudaFree(first_slots);
  cudaFree(second_slots);
  cudaFree(counter);
}

// A null slots or out pointer with tokens to process is an InvalidArgument naming it, and
// nothing is launched: a kernel reading through it would leave the CUDA context unusable.
TEST(StoreKvCudaTest, NullAndMisalignedPointersAreRejectedBeforeAnyLaunch) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  std::unique_ptr<KvCache> device = SmallDeviceCache();
  const std::vector<float> k(3 * 16, 1.5f);
  float* dk = ToDevice(k);
  float* dout = ToDevice(std::vector<float>(3 * 2 * 16));
  int32_t* dslots = ToDevice(std::vector<int32_t>{1, 2, 3});
  const KvRows rows{dk, dk, DType::kFloat32, 0};
  absl::Status status = StoreKvCuda(device->view(), 0, nullptr, 3, rows, nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "slots is null with num_tokens = 3");
  status = DequantizeCuda(device->view(), 0, nullptr, 3, dout, nullptr);
  EXPECT_EQ(status.message(), "slots is null with num_tokens = 3");
  status = DequantizeCuda(device->view(), 0, dslots, 3, nullptr, nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "out is null with num_tokens = 3");
  // Pointers not aligned to their elements: a misaligned access would fault and end the
  // context, which the synchronize below would report.
  const int32_t* odd_slots = reinterpret_cast<const int32_t*>(reinterpret_cast<char*>(dslots) + 2);
  status = StoreKvCuda(device->view(), 0, odd_slots, 2, rows, nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("slots = 0x"), std::string::npos) << status;
  EXPECT_NE(status.message().find("is not aligned to its 4-byte elements"), std::string::npos)
      << status;
  const KvRows odd_rows{dk, reinterpret_cast<char*>(dk) + 2, DType::kFloat32, 0};
  status = StoreKvCuda(device->view(), 0, dslots, 2, odd_rows, nullptr);
  EXPECT_NE(status.message().find("KvRows.v = 0x"), std::string::npos) << status;
  status = DequantizeCuda(device->view(), 0, odd_slots, 2, dout, nullptr);
  EXPECT_NE(status.message().find("slots = 0x"), std::string::npos) << status;
  status = DequantizeCuda(device->view(), 0, dslots, 3,
                          reinterpret_cast<float*>(reinterpret_cast<char*>(dout) + 2), nullptr);
  EXPECT_NE(status.message().find("out = 0x"), std::string::npos) << status;
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaFree(dk);
  cudaFree(dout);
  cudaFree(dslots);
}

// DequantizeCudaToHost checks the view and the layer before it sizes anything, as
// DequantizeCuda does, even with no slots: a view whose head_dim is negative would otherwise
// size a vector past its limit and throw. Runs without a device: nothing reaches CUDA.
TEST(StoreKvCudaTest, DequantizeToHostRefusesABadViewOrLayerBeforeSizingAnything) {
  KvCacheConfig config;
  config.kv_heads = 1;
  config.head_dim = 16;
  config.capacity_slots = 4;
  absl::StatusOr<std::unique_ptr<KvCache>> cache = KvCache::Create(config, MemoryKind::kHost);
  ASSERT_TRUE(cache.ok()) << cache.status();
  KvCacheView bad = (*cache)->view();
  bad.layout.head_dim = -8;
  absl::StatusOr<std::vector<float>> kv = DequantizeCudaToHost(bad, 0, {1}, nullptr);
  EXPECT_EQ(kv.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(kv.status().message().find("head_dim = -8"), std::string::npos) << kv.status();
  kv = DequantizeCudaToHost((*cache)->view(), 99, {}, nullptr);
  EXPECT_EQ(kv.status().code(), absl::StatusCode::kInvalidArgument) << kv.status();
  EXPECT_NE(kv.status().message().find("99"), std::string::npos) << kv.status();
}

// An embedder's earlier failed call, left unchecked, is not reported as the store's own launch
// failure (the store ran: reporting it would make the caller retire a step that worked).
TEST(StoreKvCudaTest, AnEarlierUncheckedErrorIsNotTheLaunchsError) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  std::unique_ptr<KvCache> device = SmallDeviceCache();
  const std::vector<float> k(1 * 16, 1.5f);
  float* dk = ToDevice(k);
  int32_t* dslots = ToDevice(std::vector<int32_t>{2});
  void* huge = nullptr;
  ASSERT_EQ(cudaMalloc(&huge, size_t{1} << 60), cudaErrorMemoryAllocation);  // left unchecked
  const absl::Status status =
      StoreKvCuda(device->view(), 0, dslots, 1, KvRows{dk, dk, DType::kFloat32, 0}, nullptr);
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaGetLastError();
  cudaFree(dk);
  cudaFree(dslots);
}

}  // namespace
}  // namespace int4kv
