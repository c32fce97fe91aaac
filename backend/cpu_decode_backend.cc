#include "backend/cpu_decode_backend.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/thread_pool.h"
#include "kv_cache/kv_cache_config.h"
#include "kv_cache/quantize.h"

namespace int4kv {
namespace {

// Dequantizes one head row into `out` [head_dim].
template <typename T>
void DequantizeRow(const KvCacheView& view, int32_t layer, int32_t slot, int32_t row, T* out) {
  const KvLayout& layout = view.layout;
  const uint8_t* bytes = view.Row(layer, slot, row);
  const uint16_t* scales = view.RowScales(layer, slot, row);
  const uint16_t* zeros = view.RowZeros(layer, slot, row);
  for (int32_t g = 0; g < layout.GroupsPerRow(); ++g) {
    const float scale = ParamToFloat(scales[g], view.param_dtype);
    const float zero = zeros == nullptr ? 0.0f : ParamToFloat(zeros[g], view.param_dtype);
    for (int32_t d = g * layout.group_size; d < (g + 1) * layout.group_size; d += 2) {
      const uint8_t byte = bytes[d / 2];
      if (view.quant_mode == QuantMode::kSymmetric) {
        out[d] = DequantizeSymmetric(LowCode(byte), scale);
        out[d + 1] = DequantizeSymmetric(HighCode(byte), scale);
      } else {
        out[d] = DequantizeAsymmetric(LowCode(byte), scale, zero);
        out[d + 1] = DequantizeAsymmetric(HighCode(byte), scale, zero);
      }
    }
  }
}

class CpuDecodeBackend : public DecodeAttentionBackend {
 public:
  CpuDecodeBackend(const KvCacheBinding& cache, const AttentionShape& shape,
                   const BackendOptions& options)
      : DecodeAttentionBackend(shape),
        cache_(cache),
        float64_(options.cpu_float64),
        strides_(ResolvedRowStrides(options, shape)),
        pool_(options.cpu_threads) {
    // Plan copies at most max_batch rows (ValidateRows): reserved here, it never allocates.
    rows_.reserve(shape.max_batch);
  }

  absl::string_view name() const override { return "cpu"; }

  absl::Status Plan(absl::Span<const DecodeRow> rows, CudaStream) override {
    planned_rows_ = -1;  // a failed Plan leaves no plan
    if (absl::Status s = ValidateRows(rows, shape_, cache_); !s.ok()) return s;
    rows_.assign(rows.begin(), rows.end());
    planned_rows_ = static_cast<int32_t>(rows_.size());
    return absl::OkStatus();
  }

  absl::Status RunWithLse(int32_t layer, const void* q, void* out, float* lse,
                          CudaStream) override {
    if (layer < 0 || layer >= cache_.view.layout.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " is out of range [0, ",
                                                     cache_.view.layout.num_layers,
                                                     ") (KvCacheView.layout.num_layers)"));
    }
    if (q == nullptr || out == nullptr) {
      return absl::InvalidArgumentError(q == nullptr ? "q is null" : "out is null");
    }
    if (planned_rows_ < 0) return absl::FailedPreconditionError(kRunWithoutPlan);
    RETURN_IF_ERROR(
        ValidateRunBuffers(q, out, lse, planned_rows_, shape_, strides_, sizeof(float)));
    // The first batch row with a bad entry (items of several bad rows race to report one).
    std::atomic<int32_t> bad_row{INT32_MAX};
    const int64_t items = static_cast<int64_t>(rows_.size()) * shape_.kv_heads;
    pool_.ParallelFor(items, [&](int64_t item) {
      const bool ok = float64_ ? RunItem<double>(layer, item, static_cast<const float*>(q),
                                                 static_cast<float*>(out), lse)
                               : RunItem<float>(layer, item, static_cast<const float*>(q),
                                                static_cast<float*>(out), lse);
      const int32_t b = static_cast<int32_t>(item / shape_.kv_heads);
      int32_t seen = bad_row.load();
      while (!ok && b < seen && !bad_row.compare_exchange_weak(seen, b)) {
      }
    });
    if (bad_row.load() == INT32_MAX) return absl::OkStatus();
    const int32_t b = bad_row.load();
    const DecodeRow& row = rows_[b];
    const int32_t* slots = cache_.req_to_token + int64_t{row.request} * cache_.req_to_token_stride;
    const int32_t t = FirstBadToken(slots, row);
    return absl::InvalidArgumentError(
        absl::StrCat("rows[", b, "] (request ", row.request, "): req_to_token[", row.request, "][",
                     t, "] = ", slots[t], " is outside the pool's slots [0, ",
                     cache_.view.layout.num_slots, "); that row's output is zeros",
                     lse != nullptr ? " (its lse -inf)" : "", ", the other rows' are computed"));
  }

 private:
  // The first of the entries a row attends ([first_token, seq_len)) outside the pool's slots,
  // or -1.
  int32_t FirstBadToken(const int32_t* slots, const DecodeRow& row) const {
    for (int32_t t = row.first_token; t < row.seq_len; ++t) {
      if (slots[t] < 0 || slots[t] >= cache_.view.layout.num_slots) return t;
    }
    return -1;
  }

  // One (batch row, KV head): the G query heads that share it, by an online softmax over the
  // row's tokens, so that the scratch has a fixed size and lives on the stack (Run allocates
  // nothing). The item reads its q only before it writes its out, and no other item's, so q
  // and out may be the same buffer. lse_all: [batch][q_heads] or null. Returns false (and
  // writes zeros, lse -inf) if the row's page table points outside the pool.
  template <typename T>
  bool RunItem(int32_t layer, int64_t item, const float* q_all, float* out_all,
               float* lse_all) const {
    const int32_t b = static_cast<int32_t>(item / shape_.kv_heads);
    const int32_t kv_head = static_cast<int32_t>(item % shape_.kv_heads);
    const int32_t group = shape_.q_heads / shape_.kv_heads;
    const int32_t dim = shape_.head_dim;
    const DecodeRow& row = rows_[b];
    const int64_t first_head = int64_t{kv_head} * group;         // of the row
    const float* q = q_all + b * strides_.q + first_head * dim;  // [group][dim]
    float* out = out_all + b * strides_.out + first_head * dim;  // [group][dim]
    float* lse = lse_all == nullptr ? nullptr : lse_all + int64_t{b} * shape_.q_heads + first_head;
    auto write_nothing_attended = [&] {
      std::fill(out, out + int64_t{group} * dim, 0.0f);
      if (lse != nullptr) std::fill(lse, lse + group, -std::numeric_limits<float>::infinity());
    };
    // Padded (its request may be any value, so its table is not read), or no token attended.
    if (row.attended_tokens() == 0) {
      write_nothing_attended();
      return true;
    }
    const int32_t* slots = cache_.req_to_token + int64_t{row.request} * cache_.req_to_token_stride;
    if (FirstBadToken(slots, row) >= 0) {
      write_nothing_attended();
      return false;
    }
    const T scale = static_cast<T>(SoftmaxScale(shape_));
    const T soft_cap = static_cast<T>(shape_.logit_soft_cap);  // 0: none
    T key[kMaxHeadDim], value[kMaxHeadDim];
    T max_score[kMaxQueryHeadsPerKvHead], total[kMaxQueryHeadsPerKvHead];
    T acc[kMaxQueryHeadsPerKvHead * kMaxHeadDim];  // [group][dim]
    std::fill(max_score, max_score + group, static_cast<T>(-INFINITY));
    std::fill(total, total + group, static_cast<T>(0));
    std::fill(acc, acc + group * dim, static_cast<T>(0));
    for (int32_t t = row.first_token; t < row.seq_len; ++t) {
      DequantizeRow(cache_.view, layer, slots[t], cache_.view.layout.KeyRow(kv_head), key);
      DequantizeRow(cache_.view, layer, slots[t], cache_.view.layout.ValueRow(kv_head), value);
      for (int32_t g = 0; g < group; ++g) {
        T score = 0;
        for (int32_t d = 0; d < dim; ++d) score += static_cast<T>(q[g * dim + d]) * key[d];
        score *= scale;
        if (soft_cap != 0) score = soft_cap * std::tanh(score / soft_cap);
        T* acc_g = acc + g * dim;
        if (score > max_score[g]) {  // rescale what came before to the new maximum
          const T shrink = std::exp(max_score[g] - score);
          total[g] *= shrink;
          for (int32_t d = 0; d < dim; ++d) acc_g[d] *= shrink;
          max_score[g] = score;
        }
        const T p = std::exp(score - max_score[g]);
        total[g] += p;
        for (int32_t d = 0; d < dim; ++d) acc_g[d] += p * value[d];
      }
    }
    for (int32_t g = 0; g < group; ++g) {
      for (int32_t d = 0; d < dim; ++d) {
        out[g * dim + d] = static_cast<float>(acc[g * dim + d] / total[g]);
      }
      if (lse != nullptr) lse[g] = static_cast<float>(max_score[g] + std::log(total[g]));
    }
    return true;
  }

  KvCacheBinding cache_;
  bool float64_;
  RowStrides strides_;  // elements between rows of q and of out
  ThreadPool pool_;
  std::vector<DecodeRow> rows_;  // the last successful plan (planned_rows_ of them)
};

}  // namespace

absl::StatusOr<std::unique_ptr<DecodeAttentionBackend>> CreateCpuDecodeBackend(
    const KvCacheBinding& cache, const AttentionShape& shape, const BackendOptions& options) {
  if (absl::Status s = ValidateShape(shape, cache); !s.ok()) return s;
  // Device pools would be dereferenced on the host in Run.
  if (absl::Status s = CheckBindingMemory(cache, MemoryKind::kHost, "cpu"); !s.ok()) return s;
  if (options.io_dtype != DType::kFloat32) {
    return absl::InvalidArgumentError(
        absl::StrCat("BackendOptions.io_dtype = ", DTypeName(options.io_dtype),
                     " is invalid for the cpu backend: must be "
                     "float32"));
  }
  if (absl::Status s = ValidateBackendOptions(options, shape); !s.ok()) return s;
  return std::unique_ptr<DecodeAttentionBackend>(new CpuDecodeBackend(cache, shape, options));
}

}  // namespace int4kv
