#include "server/grpc_device_info.h"

#include <fstream>

#include "common/cuda_check.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

TEST(DeviceInfoTest, CpuNameFromCpuinfo) {
#if defined(__x86_64__)
  if (!std::ifstream("/proc/cpuinfo").good()) GTEST_SKIP() << "no /proc/cpuinfo";
  EXPECT_FALSE(CpuModelName().empty());  // x86 cpuinfo always has a "model name" line
  EXPECT_EQ(DeviceName("cpu"), CpuModelName());
#else
  GTEST_SKIP() << "cpuinfo's model name line is x86-specific";
#endif
}

TEST(DeviceInfoTest, CudaNameIsEmptyExactlyWithoutADevice) {
  EXPECT_EQ(CudaDeviceName().empty(), CudaDeviceCount() == 0);
  EXPECT_EQ(DeviceName("cuda"), CudaDeviceName());
}

TEST(DeviceInfoTest, UnknownBackendHasNoName) { EXPECT_EQ(DeviceName("tpu"), ""); }

}  // namespace
}  // namespace int4kv
