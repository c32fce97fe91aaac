#include "server/testing/float_kv_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/step_batch.h"

namespace int4kv {

absl::StatusOr<std::unique_ptr<FloatKvAttention>> FloatKvAttention::Create(
    const KvCache* cache, int32_t q_heads, int32_t max_step_tokens) {
  if (cache == nullptr) return absl::InvalidArgumentError("FloatKvAttention: cache is null");
  if (q_heads < 1 || q_heads % cache->config().kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("q_heads = ", q_heads,
                                                   " must be a positive multiple of kv_heads (",
                                                   cache->config().kv_heads, ")"));
  }
  return std::unique_ptr<FloatKvAttention>(new FloatKvAttention(cache, q_heads, max_step_tokens));
}

FloatKvAttention::FloatKvAttention(const KvCache* cache, int32_t q_heads, int32_t max_step_tokens)
    : cache_(cache),
      q_heads_(q_heads),
      kv_heads_(cache->config().kv_heads),
      head_dim_(cache->config().head_dim),
      max_step_tokens_(max_step_tokens),
      num_slots_(cache->config().capacity_slots + 1),
      store_(static_cast<size_t>(cache->config().num_layers) * num_slots_ * 2 * kv_heads_ *
             head_dim_),
      scores_(cache->config().max_seq_len) {}

float* FloatKvAttention::Row(int32_t layer, int32_t slot, int32_t kv) {
  return store_.data() + ((int64_t{layer} * num_slots_ + slot) * 2 + kv) * kv_heads_ * head_dim_;
}

absl::Status FloatKvAttention::Plan(const StepBatch& batch) {
  planned_ = false;  // a failed Plan leaves no plan
  RETURN_IF_ERROR(CheckSlotsAndRows(batch, cache_->requests()));
  if (batch.num_tokens() > max_step_tokens_) {
    return absl::InvalidArgumentError(
        absl::StrCat("step of ", batch.num_tokens(), " tokens exceeds ", max_step_tokens_));
  }
  for (int32_t i = 0; i < batch.num_tokens(); ++i) {
    if (batch.slots[i] < 0 || batch.slots[i] >= num_slots_) {
      return absl::InvalidArgumentError(absl::StrCat("slots[", i, "] is out of range"));
    }
    const DecodeRow& row = batch.rows[i];
    if (row.seq_len < 1 || row.seq_len > cache_->requests().Length(row.request)) {
      return absl::InvalidArgumentError(
          absl::StrCat("rows[", i, "].seq_len = ", row.seq_len, " exceeds its request's length"));
    }
  }
  plan_ = batch;
  planned_ = true;
  return absl::OkStatus();
}

absl::Status FloatKvAttention::Attend(int32_t layer, const void* q_void, const void* k_void,
                                      const void* v_void, void* out_void) {
  if (!planned_) {
    return absl::FailedPreconditionError("FloatKvAttention::Attend without a successful Plan");
  }
  const float* q = static_cast<const float*>(q_void);
  const float* k = static_cast<const float*>(k_void);
  const float* v = static_cast<const float*>(v_void);
  float* out = static_cast<float*>(out_void);
  const int64_t kv_width = int64_t{kv_heads_} * head_dim_;
  for (int32_t t = 0; t < plan_.num_tokens(); ++t) {
    std::memcpy(Row(layer, plan_.slots[t], 0), k + t * kv_width, kv_width * sizeof(float));
    std::memcpy(Row(layer, plan_.slots[t], 1), v + t * kv_width, kv_width * sizeof(float));
  }
  const int32_t group = q_heads_ / kv_heads_;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim_));
  for (int32_t t = 0; t < plan_.num_tokens(); ++t) {
    const DecodeRow& row = plan_.rows[t];
    const absl::Span<const int32_t> context = cache_->requests().Tokens(row.request);
    for (int32_t h = 0; h < q_heads_; ++h) {
      const float* qh = q + (int64_t{t} * q_heads_ + h) * head_dim_;
      float* oh = out + (int64_t{t} * q_heads_ + h) * head_dim_;
      const int32_t kv_head = h / group;
      float max_score = -INFINITY;
      for (int32_t s = 0; s < row.seq_len; ++s) {
        const float* key = Row(layer, context[s], 0) + int64_t{kv_head} * head_dim_;
        float dot = 0.0f;
        for (int32_t d = 0; d < head_dim_; ++d) dot += qh[d] * key[d];
        scores_[s] = dot * scale;
        max_score = std::max(max_score, scores_[s]);
      }
      float total = 0.0f;
      for (int32_t s = 0; s < row.seq_len; ++s) {
        scores_[s] = std::exp(scores_[s] - max_score);
        total += scores_[s];
      }
      std::fill(oh, oh + head_dim_, 0.0f);
      for (int32_t s = 0; s < row.seq_len; ++s) {
        const float* value = Row(layer, context[s], 1) + int64_t{kv_head} * head_dim_;
        const float p = scores_[s] / total;
        for (int32_t d = 0; d < head_dim_; ++d) oh[d] += p * value[d];
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace int4kv
