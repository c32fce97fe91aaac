// Host <-> device helpers for the CUDA kernel tests: half-precision conversion on the host
// (bit-exact with the device's round-to-nearest-even) and copies that fail the test on error.
#ifndef INT4KV_SERVER_CUDA_TESTING_DEVICE_TEST_UTIL_H_
#define INT4KV_SERVER_CUDA_TESTING_DEVICE_TEST_UTIL_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <random>
#include <vector>

#include "common/device_memory.h"
#include "common/dtype.h"
#include "common/half_dtype.h"
#include "gtest/gtest.h"

namespace int4kv {

// Relative precision of one rounding to dtype.
inline double HalfEpsilon(DType dtype) {
  return dtype == DType::kBFloat16 ? 1.0 / 256 : 1.0 / 2048;
}

inline std::vector<float> RandomFloats(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Rounds every value to dtype (the values a device tensor of that type holds).
inline std::vector<float> RoundTo(const std::vector<float>& v, DType dtype) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = FromHalfBits(ToHalfBits(v[i], dtype), dtype);
  return out;
}

// A device buffer holding `v` as dtype (float32 stays float32).
inline DeviceBuffer Upload(const std::vector<float>& v, DType dtype) {
  DeviceBuffer buffer;
  EXPECT_TRUE(buffer.Allocate(v.size() * DTypeSize(dtype), "test input").ok());
  if (dtype == DType::kFloat32) {
    EXPECT_EQ(cudaMemcpy(buffer.get(), v.data(), v.size() * 4, cudaMemcpyHostToDevice),
              cudaSuccess);
  } else {
    std::vector<uint16_t> bits(v.size());
    for (size_t i = 0; i < v.size(); ++i) bits[i] = ToHalfBits(v[i], dtype);
    EXPECT_EQ(cudaMemcpy(buffer.get(), bits.data(), bits.size() * 2, cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  return buffer;
}

template <typename T>
DeviceBuffer UploadRaw(const std::vector<T>& v) {
  DeviceBuffer buffer;
  EXPECT_TRUE(buffer.Allocate(v.size() * sizeof(T), "test input").ok());
  EXPECT_EQ(cudaMemcpy(buffer.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice),
            cudaSuccess);
  return buffer;
}

// A device buffer of `n` elements of dtype filled with 0xff bytes (NaN in every float type),
// so an element a kernel fails to write shows up.
inline DeviceBuffer Poisoned(size_t n, DType dtype) {
  DeviceBuffer buffer;
  EXPECT_TRUE(buffer.Allocate(n * DTypeSize(dtype), "test output").ok());
  EXPECT_EQ(cudaMemset(buffer.get(), 0xff, n * DTypeSize(dtype)), cudaSuccess);
  return buffer;
}

// The first n elements of a device buffer of dtype, as float.
inline std::vector<float> Download(const DeviceBuffer& buffer, size_t n, DType dtype) {
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<float> out(n);
  if (dtype == DType::kFloat32) {
    EXPECT_EQ(cudaMemcpy(out.data(), buffer.get(), n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  } else {
    std::vector<uint16_t> bits(n);
    EXPECT_EQ(cudaMemcpy(bits.data(), buffer.get(), n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    for (size_t i = 0; i < n; ++i) out[i] = FromHalfBits(bits[i], dtype);
  }
  return out;
}

}  // namespace int4kv

#endif  // INT4KV_SERVER_CUDA_TESTING_DEVICE_TEST_UTIL_H_
