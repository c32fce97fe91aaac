// GetServerInfo over real gRPC on the CPU path: the backend block is the engine's (its CPU model
// name, no CUDA graphs even though EngineConfig.cuda_graphs defaults to on), and the KV sizing
// in bytes comes back as the slots and pool bytes the engine created.
#include <memory>

#include "gtest/gtest.h"
#include "server/engine_device.h"
#include "tests/testing/generate_call.h"
#include "tests/testing/in_process_server.h"

namespace int4kv {
namespace {

TEST(ServerInfoTest, CpuBackendReportsTheCpuNameAndNoGraphBuckets) {
  EngineConfig config = TestEngineConfig();
  ASSERT_TRUE(config.cuda_graphs);  // on, yet the cpu path captures nothing
  InProcessServer server(config);
  auto stub = server.NewStub();
  const v1::ServerInfo info = GetInfo(*stub);
  EXPECT_EQ(info.backend().backend(), "cpu");
  EXPECT_EQ(info.backend().device_name(), CpuModelName());
  EXPECT_EQ(info.backend().device_name(), server.engine().GetInfo().device_name);
#if defined(__x86_64__)
  EXPECT_FALSE(info.backend().device_name().empty());  // x86 /proc/cpuinfo names the model
#endif
  EXPECT_FALSE(info.backend().cuda_graphs());
  EXPECT_TRUE(info.backend().graph_buckets().empty());
}

TEST(ServerInfoTest, ByteBudgetComesBackAsTheCreatedSlotsAndPoolBytes) {
  EngineConfig config = TestEngineConfig();
  config.kv_budget_bytes = 1 << 20;
  InProcessServer server(config);
  auto stub = server.NewStub();
  const v1::ServerInfo info = GetInfo(*stub);
  // stories260K: 240 bytes a token; slot 0 of the budget is reserved.
  EXPECT_EQ(info.kv_cache().bytes_per_token(), 240);
  EXPECT_EQ(info.capacity().slots_total(), (1 << 20) / 240 - 1);
  EXPECT_EQ(info.capacity().slots_free(), info.capacity().slots_total());
  EXPECT_EQ(info.kv_cache().pool_bytes(), ((1 << 20) / 240) * 240);
}

}  // namespace
}  // namespace int4kv
