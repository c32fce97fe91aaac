// The name of the device an engine runs on (EngineInfo::device_name, reported by GetServerInfo
// and the server's start-up log).
#ifndef INT4KV_SERVER_ENGINE_DEVICE_H_
#define INT4KV_SERVER_ENGINE_DEVICE_H_

#include <string>

#include "absl/strings/string_view.h"

namespace int4kv {

// The CPU's model name from /proc/cpuinfo, or "" if unknown.
std::string CpuModelName();
// The value of the first "model name" line of a cpuinfo text, trimmed; "" if none.
std::string CpuModelNameIn(absl::string_view cpuinfo);

// The current CUDA device's name ("NVIDIA H100 80GB HBM3"), or "" without a usable device.
std::string CudaDeviceName();

// The name of a resolved EngineConfig::device: CpuModelName() for "cpu", CudaDeviceName() for
// "cuda", "" otherwise.
std::string DeviceName(absl::string_view device);

}  // namespace int4kv

#endif  // INT4KV_SERVER_ENGINE_DEVICE_H_
