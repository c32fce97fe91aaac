// The model's linear layers on cuBLAS: half-precision operands on tensor cores with float32
// accumulation (cublasGemmEx, CUBLAS_COMPUTE_32F). Weights keep the llama2.c orientation,
// row-major [out_features][in_features], like the CPU path.
//
// The handle is bound to one stream and one workspace, both fixed at creation, so GEMMs
// allocate nothing and can be captured in a CUDA graph.
//
// Thread ownership: one thread at a time (the engine's scheduler thread).
#ifndef INT4KV_SERVER_CUDA_CUBLAS_GEMM_H_
#define INT4KV_SERVER_CUDA_CUBLAS_GEMM_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "common/cuda_stream.h"
#include "common/device_memory.h"
#include "common/dtype.h"

struct cublasContext;

namespace int4kv {

class CublasGemm {
 public:
  // stream: not owned, outlives this object.
  static absl::StatusOr<std::unique_ptr<CublasGemm>> Create(CudaStream stream,
                                                            size_t workspace_bytes = 32 << 20);
  ~CublasGemm();
  CublasGemm(const CublasGemm&) = delete;
  CublasGemm& operator=(const CublasGemm&) = delete;

  // y[r][o] = sum_i x[r][i] * w[o][i]  (+ y[r][o] when accumulate), for r < rows, o < out.
  //   x: device [rows][in] of dtype;  w: device [out][in] of dtype (float16 or bfloat16);
  //   y: device [rows][out] of y_dtype (dtype, or float32 — with accumulate, the residual add
  //   of the float32 residual stream).
  // rows == 0 does nothing.
  absl::Status Linear(const void* x, const void* w, void* y, int32_t rows, int32_t out, int32_t in,
                      DType dtype, DType y_dtype, bool accumulate);

 private:
  CublasGemm() = default;

  cublasContext* handle_ = nullptr;
  DeviceBuffer workspace_;
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_CUDA_CUBLAS_GEMM_H_
