// The load generator's requests: prompt and output lengths drawn from the configured
// distributions, prompt ids valid for the server's vocabulary (GetServerInfo), reproducible
// from the seed.
//
// Thread ownership: not thread-safe; the driver thread owns it.
#ifndef INT4KV_TOOLS_REQUEST_MIX_H_
#define INT4KV_TOOLS_REQUEST_MIX_H_

#include <cstdint>
#include <random>

#include "proto/generation.pb.h"
#include "tools/loadgen_config.h"

namespace int4kv {

class RequestMix {
 public:
  RequestMix(const LoadgenConfig& config, const v1::ModelInfo& model);

  // The next request: the model's BOS token, then prompt_len - 1 ids uniform in
  // [0, vocab_size); max_new_tokens from output_len; request_id "lg-<n>"; a per-request
  // sampling seed when sampling is on.
  v1::GenerateRequest Next();

 private:
  const LoadgenConfig config_;
  const int32_t vocab_size_;
  const int32_t bos_token_;
  std::mt19937_64 rng_;
  int64_t count_ = 0;
};

}  // namespace int4kv

#endif  // INT4KV_TOOLS_REQUEST_MIX_H_
