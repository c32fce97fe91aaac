#include "server/engine_device.h"

#include <fstream>

#include "common/cuda_check.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

TEST(EngineDeviceTest, CpuNameFromCpuinfo) {
#if defined(__x86_64__)
  if (!std::ifstream("/proc/cpuinfo").good()) GTEST_SKIP() << "no /proc/cpuinfo";
  EXPECT_FALSE(CpuModelName().empty());  // x86 cpuinfo always has a "model name" line
  EXPECT_EQ(DeviceName("cpu"), CpuModelName());
#else
  GTEST_SKIP() << "cpuinfo's model name line is x86-specific";
#endif
}

TEST(EngineDeviceTest, CudaNameIsEmptyExactlyWithoutADevice) {
  EXPECT_EQ(CudaDeviceName().empty(), CudaDeviceCount() == 0);
  EXPECT_EQ(DeviceName("cuda"), CudaDeviceName());
}

TEST(EngineDeviceTest, UnknownDeviceHasNoName) { EXPECT_EQ(DeviceName("tpu"), ""); }

}  // namespace
}  // namespace int4kv
