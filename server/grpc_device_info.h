// The name of the device a backend runs on, for GetServerInfo and the start-up log.
#ifndef INT4KV_SERVER_GRPC_DEVICE_INFO_H_
#define INT4KV_SERVER_GRPC_DEVICE_INFO_H_

#include <string>

#include "absl/strings/string_view.h"

namespace int4kv {

// The CPU's model name from /proc/cpuinfo, or "" if unknown.
std::string CpuModelName();

// The current CUDA device's name ("NVIDIA H100 80GB HBM3"), or "" without a usable device.
std::string CudaDeviceName();

// CpuModelName() for "cpu", CudaDeviceName() for "cuda", "" otherwise.
std::string DeviceName(absl::string_view backend);

}  // namespace int4kv

#endif  // INT4KV_SERVER_GRPC_DEVICE_INFO_H_
