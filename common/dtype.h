// Element types of the tensors that cross the project's APIs.
#ifndef INT4KV_COMMON_DTYPE_H_
#define INT4KV_COMMON_DTYPE_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace int4kv {

enum class DType : int32_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

inline int DTypeSize(DType dtype) { return dtype == DType::kFloat32 ? 4 : 2; }

inline absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
  }
  return "unknown";
}

}  // namespace int4kv

#endif  // INT4KV_COMMON_DTYPE_H_
