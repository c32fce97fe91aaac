// An independent float32 reference of the Llama forward pass for one sequence, written
// directly from the llama2.c checkpoint format (its own file reading, its own loops, its own
// unquantized K/V), sharing no code with the engine's model. Tests and the INT4 agreement
// tool compare the engine against it.
#ifndef INT4KV_SERVER_TESTING_REFERENCE_LLAMA_H_
#define INT4KV_SERVER_TESTING_REFERENCE_LLAMA_H_

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace int4kv {

class ReferenceLlama {
 public:
  // Reads a legacy llama2.c checkpoint (shared classifier only).
  static absl::StatusOr<ReferenceLlama> Load(const std::string& path);

  int vocab_size() const { return vocab_; }

  // Optional: applied to each new K and V head row [head_dim] before it is cached, to model a
  // lossy cache (for example an INT4 quantize -> dequantize round trip). Null: exact float.
  void set_kv_round_trip(std::function<void(float* row, int head_dim)> round_trip) {
    kv_round_trip_ = std::move(round_trip);
  }

  // Clears the sequence (position 0 next).
  void Reset();
  // Feeds `token` at the next position; returns the logits [vocab] predicting the one after.
  const std::vector<float>& Step(int32_t token);

  // Greedy continuation of `prompt` (fresh sequence): `count` tokens, argmax with the lowest id
  // on ties, never stopping at EOS.
  std::vector<int32_t> Greedy(const std::vector<int32_t>& prompt, int count);

  // `count` tokens sampled at temperature 1 after `prompt` (fresh sequence), using `rng`.
  std::vector<int32_t> Sample(const std::vector<int32_t>& prompt, int count, std::mt19937_64& rng);

 private:
  ReferenceLlama() = default;

  int dim_ = 0, hidden_ = 0, layers_ = 0, heads_ = 0, kv_heads_ = 0, vocab_ = 0, seq_len_ = 0;
  int head_dim_ = 0, kv_dim_ = 0;
  std::vector<float> file_;  // every float of the checkpoint after the header
  // Offsets (in floats) of the tensors in file_.
  size_t embedding_ = 0, rms_att_ = 0, wq_ = 0, wk_ = 0, wv_ = 0, wo_ = 0, rms_ffn_ = 0, w1_ = 0,
         w2_ = 0, w3_ = 0, rms_final_ = 0;
  std::function<void(float*, int)> kv_round_trip_;
  int position_ = 0;
  std::vector<float> key_cache_, value_cache_;  // [layers][seq_len][kv_dim]
  std::vector<float> x_, xb_, q_, k_, v_, att_, out_, h1_, h3_, logits_;
};

// Prompts drawn from the model itself: BOS, then `min_len - 1` .. `max_len - 1` tokens sampled
// at temperature 1, so the prompts look like the model's training data. Deterministic in seed.
std::vector<std::vector<int32_t>> ModelPrompts(ReferenceLlama& model, int count, int min_len,
                                               int max_len, uint64_t seed);

}  // namespace int4kv

#endif  // INT4KV_SERVER_TESTING_REFERENCE_LLAMA_H_
