// The CPU backend's Run allocates nothing (DecodeAttentionBackend's contract), its first Run
// included, with several workers: this binary counts every global operator new while a
// planned backend runs.
#include <vector>

#include "backend/cpu_decode_backend.h"
#include "backend/testing/allocation_counter.h"
#include "gtest/gtest.h"
#include "kv_cache/kv_cache.h"
#include "kv_cache/store_kv.h"

namespace int4kv {
namespace {

TEST(CpuRunAllocationTest, RunsAllocateNothing) {
  KvCacheConfig config;
  config.num_layers = 1;
  config.kv_heads = 2;
  config.head_dim = 16;
  config.capacity_slots = 64;
  config.max_requests = 2;
  config.max_seq_len = 32;
  auto cache = *KvCache::Create(config, MemoryKind::kHost);
  std::vector<DecodeRow> rows;
  for (int len : {32, 17}) {
    std::vector<int32_t> slots;
    ASSERT_TRUE(cache->slots().Allocate(len, &slots).ok());
    const int32_t request = *cache->requests().AllocateRequest();
    ASSERT_TRUE(cache->requests().Append(request, slots).ok());
    std::vector<float> k(static_cast<size_t>(len) * 2 * 16, 0.25f), v(k.size(), -0.5f);
    ASSERT_TRUE(StoreKvHost(cache->view(), 0, slots, KvRows{k.data(), v.data(), DType::kFloat32, 0})
                    .ok());
    rows.push_back({request, len});
  }
  BackendOptions options;
  options.cpu_threads = 3;
  auto backend = *CreateCpuDecodeBackend(BindingFor(*cache), ShapeFor(*cache, 4, 2), options);
  ASSERT_TRUE(backend->Plan(rows, nullptr).ok());
  std::vector<float> q(2 * 4 * 16, 0.125f), out(q.size());
  const int64_t before = GlobalAllocations();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(backend->Run(0, q.data(), out.data(), nullptr).ok());
  EXPECT_EQ(GlobalAllocations() - before, 0);
  EXPECT_NEAR(out[0], -0.5f, 1e-3);  // every V element is -0.5 (quantized)
}

}  // namespace
}  // namespace int4kv
