// Creates a decode-attention backend by name.
#ifndef INT4KV_BACKEND_CREATE_BACKEND_H_
#define INT4KV_BACKEND_CREATE_BACKEND_H_

#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "backend/decode_attention_backend.h"

namespace int4kv {

// name: "cpu" (host cache) or "cuda" (device cache, needs a GPU). Checks the shape and the
// options against the cache; errors name the field and the limit.
absl::StatusOr<std::unique_ptr<DecodeAttentionBackend>> CreateDecodeAttentionBackend(
    absl::string_view name, const KvCacheBinding& cache, const AttentionShape& shape,
    const BackendOptions& options);

}  // namespace int4kv

#endif  // INT4KV_BACKEND_CREATE_BACKEND_H_
