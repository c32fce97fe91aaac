#include "tools/request_mix.h"

#include <string>

namespace int4kv {

RequestMix::RequestMix(const LoadgenConfig& config, const v1::ModelInfo& model)
    : config_(config),
      vocab_size_(model.vocab_size()),
      bos_token_(
          model.bos_token() >= 0 && model.bos_token() < model.vocab_size() ? model.bos_token() : 0),
      rng_(config.seed) {}

v1::GenerateRequest RequestMix::Next() {
  v1::GenerateRequest request;
  const int32_t prompt_len = config_.prompt_len.Sample(rng_);
  request.mutable_prompt()->Reserve(prompt_len);
  request.add_prompt(bos_token_);
  std::uniform_int_distribution<int32_t> token(0, vocab_size_ - 1);
  for (int32_t i = 1; i < prompt_len; ++i) request.add_prompt(token(rng_));
  request.set_max_new_tokens(config_.output_len.Sample(rng_));
  request.set_request_id("lg-" + std::to_string(count_++));
  v1::SamplingParams& sampling = *request.mutable_sampling();
  sampling.set_ignore_eos(config_.ignore_eos);
  if (config_.temperature > 0) {
    sampling.set_temperature(config_.temperature);
    sampling.set_seed(rng_());
  }
  return request;
}

}  // namespace int4kv
