#include <cublas_v2.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/cuda/cublas_gemm.h"

namespace int4kv {
namespace {

absl::Status CublasStatus(cublasStatus_t status, const char* call) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  const std::string message = absl::StrCat(call, " failed: ", cublasGetStatusName(status), " (",
                                           cublasGetStatusString(status), ")");
  return status == CUBLAS_STATUS_ALLOC_FAILED ? absl::ResourceExhaustedError(message)
                                              : absl::InternalError(message);
}

#define CUBLAS_RETURN_IF_ERROR(call) RETURN_IF_ERROR(CublasStatus((call), #call))

absl::StatusOr<cudaDataType_t> CudaType(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return CUDA_R_32F;
    case DType::kFloat16:
      return CUDA_R_16F;
    case DType::kBFloat16:
      return CUDA_R_16BF;
  }
  return absl::InvalidArgumentError("unknown dtype");
}

}  // namespace

absl::StatusOr<std::unique_ptr<CublasGemm>> CublasGemm::Create(CudaStream stream,
                                                               size_t workspace_bytes) {
  std::unique_ptr<CublasGemm> gemm(new CublasGemm());
  CUBLAS_RETURN_IF_ERROR(cublasCreate(&gemm->handle_));
  CUBLAS_RETURN_IF_ERROR(cublasSetStream(gemm->handle_, stream));
  // A fixed user workspace: cuBLAS then never allocates one during graph capture.
  RETURN_IF_ERROR(gemm->workspace_.Allocate(workspace_bytes, "the cuBLAS workspace"));
  CUBLAS_RETURN_IF_ERROR(
      cublasSetWorkspace(gemm->handle_, gemm->workspace_.get(), gemm->workspace_.bytes()));
  return gemm;
}

CublasGemm::~CublasGemm() {
  if (handle_ != nullptr) cublasDestroy(handle_);
}

absl::Status CublasGemm::Linear(const void* x, const void* w, void* y, int32_t rows, int32_t out,
                                int32_t in, DType dtype, DType y_dtype, bool accumulate) {
  if (rows == 0) return absl::OkStatus();
  if (dtype != DType::kFloat16 && dtype != DType::kBFloat16) {
    return absl::InvalidArgumentError(
        absl::StrCat("GEMM dtype ", DTypeName(dtype), " is invalid: must be float16 or bfloat16"));
  }
  if (y_dtype != dtype && y_dtype != DType::kFloat32) {
    return absl::InvalidArgumentError(absl::StrCat("GEMM output dtype ", DTypeName(y_dtype),
                                                   " is invalid: must be ", DTypeName(dtype),
                                                   " or float32"));
  }
  ASSIGN_OR_RETURN(const cudaDataType_t operand_type, CudaType(dtype));
  ASSIGN_OR_RETURN(const cudaDataType_t output_type, CudaType(y_dtype));
  const float alpha = 1.0f;
  const float beta = accumulate ? 1.0f : 0.0f;
  // Column-major view: y^T [out][rows] = (w^T)^T [out][in] * x^T [in][rows], where the
  // row-major w [out][in] is the column-major matrix w^T with leading dimension `in`.
  CUBLAS_RETURN_IF_ERROR(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &alpha, w,
                                      operand_type, in, x, operand_type, in, &beta, y, output_type,
                                      out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

}  // namespace int4kv
