// ASSERT_CUDA(call): a gtest assertion that a CUDA runtime call returned cudaSuccess, naming
// the call when it did not.
#ifndef INT4KV_BACKEND_TESTING_CUDA_ASSERT_H_
#define INT4KV_BACKEND_TESTING_CUDA_ASSERT_H_

#include <cuda_runtime_api.h>

#include "gtest/gtest.h"

#define ASSERT_CUDA(call) ASSERT_EQ((call), cudaSuccess) << #call

#endif  // INT4KV_BACKEND_TESTING_CUDA_ASSERT_H_
