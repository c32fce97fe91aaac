#include "server/engine_device.h"

#include <cuda_runtime.h>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "common/cuda_check.h"

namespace int4kv {

std::string CpuModelNameIn(absl::string_view cpuinfo) {
  for (const absl::string_view line : absl::StrSplit(cpuinfo, '\n')) {
    if (!absl::StartsWith(line, "model name")) continue;
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
  }
  return "";
}

std::string CpuModelName() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::ostringstream text;
  text << cpuinfo.rdbuf();
  return CpuModelNameIn(text.str());
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
