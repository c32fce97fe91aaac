// Host time of one Sampler::Sample call (one row of one step) by vocabulary size and setting:
//   bazel run -c opt //server:sampler_bench
// Logits are normal with standard deviation 3, temperature 0.8; the median of 9 rounds of 100
// draws. Greedy rows on the cuda path take the device argmax instead, when every row of the step
// is greedy.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "server/sampler.h"

int main() {
  using int4kv::Sampler;
  using int4kv::SamplingParams;
  std::printf("| vocab | setting | us per row |\n|---:|---|---:|\n");
  for (const int vocab : {32000, 128256}) {
    std::mt19937 gen(1);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    std::vector<float> logits(vocab);
    for (float& x : logits) x = normal(gen);
    struct Setting {
      const char* name;
      float temperature;
      int top_k;
      float top_p;
    };
    for (const Setting& s :
         {Setting{"greedy", 0.0f, 0, 1.0f}, Setting{"temperature", 0.8f, 0, 1.0f},
          Setting{"top_k 40", 0.8f, 40, 1.0f}, Setting{"top_p 0.9", 0.8f, 0, 0.9f}}) {
      SamplingParams params;
      params.temperature = s.temperature;
      params.top_k = s.top_k;
      params.top_p = s.top_p;
      Sampler sampler(params, 42);
      std::vector<double> rounds;
      int64_t sink = 0;
      for (int round = 0; round < 9; ++round) {
        const auto start = std::chrono::steady_clock::now();
        for (int i = 0; i < 100; ++i) sink += sampler.Sample(logits);
        rounds.push_back(
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
                .count() /
            100);
      }
      std::nth_element(rounds.begin(), rounds.begin() + 4, rounds.end());
      std::printf("| %d | %s | %.1f |\n", vocab, s.name, rounds[4]);
      if (sink == -1) std::printf("unreachable\n");
    }
  }
  return 0;
}
