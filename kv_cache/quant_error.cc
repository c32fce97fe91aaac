// Prints how much INT4 quantization of the KV cache moves attention outputs.
//
//   bazel run -c opt //kv_cache:quant_error [-- --seq_len=1024 --trials=8 --seed=1]
//
// For each data set (Gaussian K/V; keys with a few large outlier channels), each group size
// and each scheme (LightLLM's truncation, round-to-nearest symmetric, asymmetric), K/V go
// through the real StoreKvHost / DequantizeHost path; decode attention of random queries is
// computed in float64 on the original and on the dequantized K/V, and the table shows the
// relative error ||out_q - out|| / ||out|| (mean over trials) and the bytes per token.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "common/parse_flags.h"
#include "kv_cache/kv_cache.h"
#include "kv_cache/store_kv.h"

ABSL_FLAG(int, seq_len, 1024, "tokens in each attention context");
ABSL_FLAG(int, trials, 8, "contexts averaged per table cell");
ABSL_FLAG(int, seed, 1, "random seed");

namespace int4kv {
namespace {

constexpr int kHeadDim = 128;
constexpr int kQueriesPerContext = 4;  // query heads sharing one KV head (GQA)

struct Scheme {
  const char* name;
  QuantMode mode;
  QuantRounding rounding;
};

const Scheme kSchemes[] = {
    {"truncate (LightLLM)", QuantMode::kSymmetric, QuantRounding::kTruncate},
    {"nearest, symmetric", QuantMode::kSymmetric, QuantRounding::kNearestEven},
    {"nearest, asymmetric", QuantMode::kAsymmetric, QuantRounding::kNearestEven},
};

// out[d] = sum_t softmax_t(q . k_t / sqrt(D)) v_t[d], in float64.
std::vector<double> Attention(const std::vector<float>& q, const std::vector<float>& k,
                              const std::vector<float>& v, int seq_len) {
  std::vector<double> scores(seq_len);
  double max_score = -1e300;
  for (int t = 0; t < seq_len; ++t) {
    double dot = 0;
    for (int d = 0; d < kHeadDim; ++d) dot += double{q[d]} * k[t * kHeadDim + d];
    scores[t] = dot / std::sqrt(double{kHeadDim});
    max_score = std::max(max_score, scores[t]);
  }
  double total = 0;
  std::vector<double> out(kHeadDim, 0.0);
  for (int t = 0; t < seq_len; ++t) {
    const double p = std::exp(scores[t] - max_score);
    total += p;
    for (int d = 0; d < kHeadDim; ++d) out[d] += p * v[t * kHeadDim + d];
  }
  for (double& x : out) x /= total;
  return out;
}

// K/V [seq_len][kHeadDim]. With outliers, 4 key channels are scaled by 20 (as seen in the
// keys of real LLMs), which stretches the groups that hold them.
void MakeContext(bool outliers, int seq_len, std::mt19937& rng, std::vector<float>* k,
                 std::vector<float>* v) {
  std::normal_distribution<float> normal;
  k->resize(static_cast<size_t>(seq_len) * kHeadDim);
  v->resize(k->size());
  for (float& x : *k) x = normal(rng);
  for (float& x : *v) x = normal(rng);
  if (outliers) {
    for (int t = 0; t < seq_len; ++t) {
      for (int channel : {5, 38, 77, 120}) (*k)[t * kHeadDim + channel] *= 20.0f;
    }
  }
}

double RelativeError(const std::vector<double>& got, const std::vector<double>& want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    diff += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  return std::sqrt(diff / norm);
}

int Run() {
  const int seq_len = absl::GetFlag(FLAGS_seq_len);
  const int trials = absl::GetFlag(FLAGS_trials);
  // Contexts are indexed with int (t * 2 * head_dim) and held several times over in memory;
  // a table of 30 cells at the largest trial count already takes hours.
  constexpr int kMaxSeqLen = 1 << 20;
  constexpr int kMaxTrials = 10000;
  if (seq_len < 1 || seq_len > kMaxSeqLen) {
    std::fprintf(stderr, "--seq_len = %d is invalid: must be in [1, %d]\n", seq_len, kMaxSeqLen);
    return 2;
  }
  if (trials < 1 || trials > kMaxTrials) {
    std::fprintf(stderr, "--trials = %d is invalid: must be in [1, %d]\n", trials, kMaxTrials);
    return 2;
  }
  std::printf("Attention-output relative error of INT4 KV vs float64 on unquantized K/V\n");
  std::printf("head_dim %d, %d query heads per KV head, %d tokens, %d trials, seed %d\n", kHeadDim,
              kQueriesPerContext, seq_len, trials, absl::GetFlag(FLAGS_seed));
  std::printf(
      "bytes/token = K + V codes and parameters for one KV head of one layer "
      "(fp16 K/V: %d)\n\n",
      2 * kHeadDim * 2);
  std::printf("| data | group | scheme | bytes/token | rel. error |\n");
  std::printf("|---|---:|---|---:|---:|\n");
  for (bool outliers : {false, true}) {
    for (int group : {8, 16, 32, 64, 128}) {
      for (const Scheme& scheme : kSchemes) {
        KvCacheConfig config;
        config.kv_heads = 1;
        config.head_dim = kHeadDim;
        config.group_size = group;
        config.quant_mode = scheme.mode;
        config.capacity_slots = seq_len;
        config.max_seq_len = seq_len;
        absl::StatusOr<std::unique_ptr<KvCache>> cache = KvCache::Create(config, MemoryKind::kHost);
        if (!cache.ok()) {
          std::fprintf(stderr, "%s\n", cache.status().ToString().c_str());
          return 1;
        }
        std::vector<int32_t> slots(seq_len);
        for (int t = 0; t < seq_len; ++t) slots[t] = t + 1;
        std::mt19937 rng(absl::GetFlag(FLAGS_seed));  // same data for every scheme
        double error_sum = 0;
        for (int trial = 0; trial < trials; ++trial) {
          std::vector<float> k, v;
          MakeContext(outliers, seq_len, rng, &k, &v);
          const absl::Status stored =
              StoreKvHost((*cache)->view(), 0, slots,
                          KvRows{k.data(), v.data(), DType::kFloat32, 0}, scheme.rounding);
          std::vector<float> restored(static_cast<size_t>(seq_len) * 2 * kHeadDim);
          const absl::Status read = DequantizeHost((*cache)->view(), 0, slots, restored.data());
          if (!stored.ok() || !read.ok()) {
            std::fprintf(stderr, "%s %s\n", stored.ToString().c_str(), read.ToString().c_str());
            return 1;
          }
          std::vector<float> kq(k.size()), vq(v.size());
          for (int t = 0; t < seq_len; ++t) {
            std::copy_n(restored.begin() + t * 2 * kHeadDim, kHeadDim, kq.begin() + t * kHeadDim);
            std::copy_n(restored.begin() + t * 2 * kHeadDim + kHeadDim, kHeadDim,
                        vq.begin() + t * kHeadDim);
          }
          std::normal_distribution<float> normal;
          for (int h = 0; h < kQueriesPerContext; ++h) {
            std::vector<float> q(kHeadDim);
            for (float& x : q) x = normal(rng);
            error_sum += RelativeError(Attention(q, kq, vq, seq_len), Attention(q, k, v, seq_len));
          }
        }
        const int64_t bytes =
            config.DataBytesPerTokenPerLayer() + config.ParamBytesPerTokenPerLayer();
        std::printf("| %s | %d | %s | %lld | %.4f |\n", outliers ? "outlier keys" : "Gaussian",
                    group, scheme.name, static_cast<long long>(bytes),
                    error_sum / (static_cast<double>(trials) * kQueriesPerContext));
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace int4kv

int main(int argc, char** argv) {
  int4kv::ParseFlagsOnly(
      argc, argv,
      "How much INT4 quantization of the KV cache moves attention outputs, by data set, "
      "group size and scheme. Example: quant_error --seq_len=1024 --trials=8");
  return int4kv::Run();
}
