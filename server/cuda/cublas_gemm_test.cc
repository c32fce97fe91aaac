// cuBLAS linear layers against a float64 reference over the same rounded operands.
#include "server/cuda/cublas_gemm.h"

#include <cmath>
#include <random>
#include <vector>

#include "common/cuda_check.h"
#include "gtest/gtest.h"
#include "server/cuda/testing/device_test_util.h"

namespace int4kv {
namespace {

class CublasGemmTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  }
};

// y[r][o] = sum_i x[r][i] * w[o][i] in float64.
std::vector<double> Reference(const std::vector<float>& x, const std::vector<float>& w, int rows,
                              int out, int in) {
  std::vector<double> y(rows * out);
  for (int r = 0; r < rows; ++r) {
    for (int o = 0; o < out; ++o) {
      double sum = 0;
      for (int i = 0; i < in; ++i) sum += double{x[r * in + i]} * w[o * in + i];
      y[r * out + o] = sum;
    }
  }
  return y;
}

TEST_P(CublasGemmTest, LinearMatchesReferenceInHalfAndAccumulatesInFloat) {
  const DType dtype = GetParam();
  const int rows = 3, out = 70, in = 96;
  std::mt19937 rng(11);
  const std::vector<float> x = RoundTo(RandomFloats(rows * in, rng), dtype);
  const std::vector<float> w = RoundTo(RandomFloats(out * in, rng, 0.2f), dtype);
  const std::vector<float> y0 = RandomFloats(rows * out, rng, 5.0f);
  const std::vector<double> want = Reference(x, w, rows, out, in);
  DeviceBuffer device_x = Upload(x, dtype);
  DeviceBuffer device_w = Upload(w, dtype);
  absl::StatusOr<std::unique_ptr<CublasGemm>> gemm = CublasGemm::Create(nullptr);
  ASSERT_TRUE(gemm.ok()) << gemm.status();

  DeviceBuffer y_half = Poisoned(rows * out, dtype);
  ASSERT_TRUE(
      (*gemm)
          ->Linear(device_x.get(), device_w.get(), y_half.get(), rows, out, in, dtype, dtype, false)
          .ok());
  const std::vector<float> got_half = Download(y_half, rows * out, dtype);
  DeviceBuffer y_float = Upload(y0, DType::kFloat32);
  ASSERT_TRUE((*gemm)
                  ->Linear(device_x.get(), device_w.get(), y_float.get(), rows, out, in, dtype,
                           DType::kFloat32, /*accumulate=*/true)
                  .ok());
  const std::vector<float> got_float = Download(y_float, rows * out, DType::kFloat32);
  for (int i = 0; i < rows * out; ++i) {
    EXPECT_NEAR(got_half[i], want[i], std::abs(want[i]) * HalfEpsilon(dtype) + 1e-4) << i;
    EXPECT_NEAR(got_float[i], y0[i] + want[i], 1e-4) << i;
  }
}

TEST_P(CublasGemmTest, RejectsAFloatOperandType) {
  absl::StatusOr<std::unique_ptr<CublasGemm>> gemm = CublasGemm::Create(nullptr);
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  const absl::Status status =
      (*gemm)->Linear(nullptr, nullptr, nullptr, 1, 1, 1, DType::kFloat32, DType::kFloat32, false);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(HalfTypes, CublasGemmTest,
                         ::testing::Values(DType::kFloat16, DType::kBFloat16),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(DTypeName(info.param));
                         });

}  // namespace
}  // namespace int4kv
