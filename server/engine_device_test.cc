#include "server/engine_device.h"

#include <fstream>

#include "common/cuda_check.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

TEST(EngineDeviceTest, CpuModelNameIsTheFirstModelNameLineTrimmed) {
  EXPECT_EQ(CpuModelNameIn("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 143\n"
                           "model name\t: Intel(R) Xeon(R) Platinum 8480+  \nstepping\t: 8\n"
                           "processor\t: 1\nmodel name\t: Other\n"),
            "Intel(R) Xeon(R) Platinum 8480+");
  EXPECT_EQ(CpuModelNameIn("model\t\t: 143\nmodel name without colon\nmodel name:AMD EPYC\n"),
            "AMD EPYC");
  EXPECT_EQ(CpuModelNameIn("processor\t: 0\n"), "");
  EXPECT_EQ(CpuModelNameIn(""), "");
}

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
