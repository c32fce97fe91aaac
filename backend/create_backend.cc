#include "backend/create_backend.h"

#include "absl/strings/str_cat.h"
#include "backend/cpu_decode_backend.h"
#include "backend/cuda_decode_backend.h"

namespace int4kv {

absl::StatusOr<std::unique_ptr<DecodeAttentionBackend>> CreateDecodeAttentionBackend(
    absl::string_view name, const KvCacheBinding& cache, const AttentionShape& shape,
    const BackendOptions& options) {
  if (name == "cpu") return CreateCpuDecodeBackend(cache, shape, options);
  if (name == "cuda") return CreateCudaDecodeBackend(cache, shape, options);
  return absl::InvalidArgumentError(
      absl::StrCat("backend name '", name, "' is unknown: must be cpu or cuda"));
}

}  // namespace int4kv
