#include "server/testing/reference_llama.h"

#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"

namespace int4kv {
namespace {

// y[i] = sum_j w[i * n + j] * x[j], i in [0, d).
void Project(const float* w, const float* x, int n, int d, float* y) {
  for (int i = 0; i < d; ++i) {
    float sum = 0.0f;
    for (int j = 0; j < n; ++j) sum += w[static_cast<size_t>(i) * n + j] * x[j];
    y[i] = sum;
  }
}

void Normalize(const float* x, const float* weight, int n, float* out) {
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) sum += x[i] * x[i];
  const float scale = 1.0f / std::sqrt(sum / n + 1e-5f);
  for (int i = 0; i < n; ++i) out[i] = weight[i] * (scale * x[i]);
}

void Rotate(float* vec, int heads, int head_dim, int position) {
  for (int h = 0; h < heads; ++h) {
    for (int i = 0; i < head_dim; i += 2) {
      const float angle = position * (1.0f / std::pow(10000.0f, i / static_cast<float>(head_dim)));
      const float c = std::cos(angle), s = std::sin(angle);
      float* p = vec + h * head_dim + i;
      const float a = p[0], b = p[1];
      p[0] = a * c - b * s;
      p[1] = a * s + b * c;
    }
  }
}

}  // namespace

absl::StatusOr<ReferenceLlama> ReferenceLlama::Load(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  int header[7];
  const bool header_ok = std::fread(header, sizeof(int), 7, file) == 7;
  std::fseek(file, 0, SEEK_END);
  const long bytes = std::ftell(file);
  std::fseek(file, 7 * sizeof(int), SEEK_SET);
  ReferenceLlama m;
  if (header_ok && bytes > 28) {
    m.file_.resize((bytes - 28) / sizeof(float));
    if (std::fread(m.file_.data(), sizeof(float), m.file_.size(), file) != m.file_.size()) {
      m.file_.clear();
    }
  }
  std::fclose(file);
  if (m.file_.empty()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  m.dim_ = header[0];
  m.hidden_ = header[1];
  m.layers_ = header[2];
  m.heads_ = header[3];
  m.kv_heads_ = header[4];
  m.vocab_ = header[5];
  m.seq_len_ = header[6];
  if (m.vocab_ <= 0) return absl::UnimplementedError("reference needs a shared classifier");
  m.head_dim_ = m.dim_ / m.heads_;
  m.kv_dim_ = m.kv_heads_ * m.head_dim_;
  const size_t d = m.dim_, l = m.layers_, h = m.hidden_, kv = m.kv_dim_;
  size_t at = 0;
  auto take = [&](size_t count) {
    const size_t offset = at;
    at += count;
    return offset;
  };
  m.embedding_ = take(m.vocab_ * d);
  m.rms_att_ = take(l * d);
  m.wq_ = take(l * d * d);
  m.wk_ = take(l * d * kv);
  m.wv_ = take(l * d * kv);
  m.wo_ = take(l * d * d);
  m.rms_ffn_ = take(l * d);
  m.w1_ = take(l * d * h);
  m.w2_ = take(l * h * d);
  m.w3_ = take(l * d * h);
  m.rms_final_ = take(d);
  if (at > m.file_.size()) return absl::DataLossError(absl::StrCat(path, " is too short"));
  m.key_cache_.resize(l * m.seq_len_ * kv);
  m.value_cache_.resize(l * m.seq_len_ * kv);
  m.x_.resize(d);
  m.xb_.resize(d);
  m.q_.resize(d);
  m.k_.resize(kv);
  m.v_.resize(kv);
  m.att_.resize(m.seq_len_);
  m.out_.resize(d);
  m.h1_.resize(h);
  m.h3_.resize(h);
  m.logits_.resize(m.vocab_);
  return m;
}

void ReferenceLlama::Reset() { position_ = 0; }

const std::vector<float>& ReferenceLlama::Step(int32_t token) {
  const int d = dim_, kv = kv_dim_, pos = position_++;
  const float* w = file_.data();
  for (int i = 0; i < d; ++i) x_[i] = w[embedding_ + static_cast<size_t>(token) * d + i];
  for (int l = 0; l < layers_; ++l) {
    Normalize(x_.data(), w + rms_att_ + l * d, d, xb_.data());
    Project(w + wq_ + static_cast<size_t>(l) * d * d, xb_.data(), d, d, q_.data());
    Project(w + wk_ + static_cast<size_t>(l) * d * kv, xb_.data(), d, kv, k_.data());
    Project(w + wv_ + static_cast<size_t>(l) * d * kv, xb_.data(), d, kv, v_.data());
    Rotate(q_.data(), heads_, head_dim_, pos);
    Rotate(k_.data(), kv_heads_, head_dim_, pos);
    if (kv_round_trip_) {
      for (int head = 0; head < kv_heads_; ++head) {
        kv_round_trip_(k_.data() + head * head_dim_, head_dim_);
        kv_round_trip_(v_.data() + head * head_dim_, head_dim_);
      }
    }
    float* key_base = key_cache_.data() + static_cast<size_t>(l) * seq_len_ * kv;
    float* value_base = value_cache_.data() + static_cast<size_t>(l) * seq_len_ * kv;
    for (int i = 0; i < kv; ++i) {
      key_base[static_cast<size_t>(pos) * kv + i] = k_[i];
      value_base[static_cast<size_t>(pos) * kv + i] = v_[i];
    }
    for (int head = 0; head < heads_; ++head) {
      const int kv_head = head / (heads_ / kv_heads_);
      const float* qh = q_.data() + head * head_dim_;
      float best = -INFINITY;
      for (int t = 0; t <= pos; ++t) {
        const float* kt = key_base + static_cast<size_t>(t) * kv + kv_head * head_dim_;
        float score = 0.0f;
        for (int i = 0; i < head_dim_; ++i) score += qh[i] * kt[i];
        att_[t] = score / std::sqrt(static_cast<float>(head_dim_));
        if (att_[t] > best) best = att_[t];
      }
      float total = 0.0f;
      for (int t = 0; t <= pos; ++t) {
        att_[t] = std::exp(att_[t] - best);
        total += att_[t];
      }
      float* oh = out_.data() + head * head_dim_;
      for (int i = 0; i < head_dim_; ++i) oh[i] = 0.0f;
      for (int t = 0; t <= pos; ++t) {
        const float* vt = value_base + static_cast<size_t>(t) * kv + kv_head * head_dim_;
        for (int i = 0; i < head_dim_; ++i) oh[i] += att_[t] / total * vt[i];
      }
    }
    Project(w + wo_ + static_cast<size_t>(l) * d * d, out_.data(), d, d, xb_.data());
    for (int i = 0; i < d; ++i) x_[i] += xb_[i];
    Normalize(x_.data(), w + rms_ffn_ + l * d, d, xb_.data());
    Project(w + w1_ + static_cast<size_t>(l) * d * hidden_, xb_.data(), d, hidden_, h1_.data());
    Project(w + w3_ + static_cast<size_t>(l) * d * hidden_, xb_.data(), d, hidden_, h3_.data());
    for (int i = 0; i < hidden_; ++i) {
      h1_[i] = h1_[i] * (1.0f / (1.0f + std::exp(-h1_[i]))) * h3_[i];
    }
    Project(w + w2_ + static_cast<size_t>(l) * hidden_ * d, h1_.data(), hidden_, d, xb_.data());
    for (int i = 0; i < d; ++i) x_[i] += xb_[i];
  }
  Normalize(x_.data(), w + rms_final_, d, x_.data());
  Project(w + embedding_, x_.data(), d, vocab_, logits_.data());
  return logits_;
}

std::vector<int32_t> ReferenceLlama::Greedy(const std::vector<int32_t>& prompt, int count) {
  Reset();
  std::vector<float> logits;
  for (int32_t token : prompt) logits = Step(token);
  std::vector<int32_t> out;
  while (static_cast<int>(out.size()) < count) {
    int32_t best = 0;
    for (int i = 1; i < vocab_; ++i) {
      if (logits[i] > logits[best]) best = i;
    }
    out.push_back(best);
    if (static_cast<int>(out.size()) < count) logits = Step(best);
  }
  return out;
}

std::vector<int32_t> ReferenceLlama::Sample(const std::vector<int32_t>& prompt, int count,
                                            std::mt19937_64& rng) {
  Reset();
  std::vector<float> logits;
  for (int32_t token : prompt) logits = Step(token);
  std::vector<int32_t> out;
  std::vector<double> probs(vocab_);
  while (static_cast<int>(out.size()) < count) {
    double best = logits[0], total = 0.0;
    for (int i = 1; i < vocab_; ++i) best = std::max(best, static_cast<double>(logits[i]));
    for (int i = 0; i < vocab_; ++i) total += probs[i] = std::exp(logits[i] - best);
    double target = static_cast<double>(rng() >> 11) * 0x1.0p-53 * total;
    int32_t pick = vocab_ - 1;
    for (int i = 0; i < vocab_; ++i) {
      target -= probs[i];
      if (target < 0) {
        pick = i;
        break;
      }
    }
    out.push_back(pick);
    if (static_cast<int>(out.size()) < count) logits = Step(pick);
  }
  return out;
}

std::vector<std::vector<int32_t>> ModelPrompts(ReferenceLlama& model, int count, int min_len,
                                               int max_len, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < count; ++i) {
    const int length = min_len + static_cast<int>(rng() % (max_len - min_len + 1));
    std::vector<int32_t> prompt = {1};  // BOS
    if (length > 1) {
      const std::vector<int32_t> body = model.Sample(prompt, length - 1, rng);
      prompt.insert(prompt.end(), body.begin(), body.end());
    }
    prompts.push_back(prompt);
  }
  return prompts;
}

}  // namespace int4kv
