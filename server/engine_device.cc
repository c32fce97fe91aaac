#include "server/engine_device.h"

#include <cuda_runtime.h>

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "common/cuda_check.h"

namespace int4kv {

std::string CpuModelName() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (!absl::StartsWith(line, "model name")) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    return std::string(absl::StripAsciiWhitespace(absl::string_view(line).substr(colon + 1)));
  }
  return "";
}

std::string CudaDeviceName() {
  if (CudaDeviceCount() == 0) return "";
  int device = 0;
  cudaDeviceProp properties;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaGetDeviceProperties(&properties, device) != cudaSuccess) {
    cudaGetLastError();  // clear the error for the next CUDA call
    return "";
  }
  return properties.name;
}

std::string DeviceName(absl::string_view device) {
  if (device == "cpu") return CpuModelName();
  if (device == "cuda") return CudaDeviceName();
  return "";
}

}  // namespace int4kv
