// How closely greedy generation through the engine with the INT4 KV cache follows the
// independent float32 reference on the real stories260K model. For each prompt:
//   first divergence   tokens generated before the first token that differs
//   match rate         fraction of the generated positions with equal tokens (free running, so
//                      after a divergence the two continuations are different texts)
//   teacher-forced     with the reference's own continuation as context (prompt + its first k
//                      tokens, k = 0, stride, 2 * stride, ...), how often the engine's next
//                      token equals the reference's
// Prompts are sampled from the model itself (temperature 1 from BOS), so they look like its
// training text.
//
//   bazel run -c opt //server:int4_agreement   (the table in docs/ACCURACY.md)
#include <cstdio>
#include <memory>
#include <vector>

#include "absl/flags/flag.h"
#include "common/half.h"
#include "common/parse_flags.h"
#include "server/engine.h"
#include "server/model_source.h"
#include "server/testing/reference_llama.h"
#include "server/testing/test_util.h"

ABSL_FLAG(int, prompts, 20, "number of prompts");
ABSL_FLAG(int, tokens, 200, "greedy tokens per prompt");
ABSL_FLAG(int, min_prompt, 4, "shortest prompt (tokens, BOS included)");
ABSL_FLAG(int, max_prompt, 48, "longest prompt (tokens, BOS included)");
ABSL_FLAG(int, stride, 5, "teacher-forced check every this many positions");
ABSL_FLAG(uint64_t, seed, 1, "seed of the prompts");
ABSL_FLAG(int, threads, 2, "CPU threads");

namespace int4kv {
namespace {

struct Agreement {
  int first_divergence = 0;
  double match_rate = 0;
  double teacher_forced = 0;
};

// Submits every request, then reads every stream (the engine batches them).
absl::StatusOr<std::vector<std::vector<int32_t>>> Generate(
    Engine& engine, const std::vector<GenerateRequest>& requests) {
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const GenerateRequest& request : requests) {
    absl::StatusOr<std::shared_ptr<RequestStream>> stream = engine.Submit(request);
    if (!stream.ok()) return stream.status();
    streams.push_back(*stream);
  }
  std::vector<std::vector<int32_t>> outputs;
  for (const auto& stream : streams) {
    GenerationResult result = stream->ReadAll();
    if (!result.status.ok()) return result.status;
    outputs.push_back(std::move(result.tokens));
  }
  return outputs;
}

absl::StatusOr<std::vector<Agreement>> Measure(QuantMode mode,
                                               const std::vector<std::vector<int32_t>>& prompts,
                                               const std::vector<std::vector<int32_t>>& expected) {
  const int tokens = absl::GetFlag(FLAGS_tokens);
  const int stride = absl::GetFlag(FLAGS_stride);
  EngineConfig config;
  config.max_batch = static_cast<int32_t>(prompts.size());
  config.max_queue = 1 << 16;
  config.threads = absl::GetFlag(FLAGS_threads);
  config.quant_mode = mode;
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(config, Stories260K(), kDefaultModelPath);
  if (!engine.ok()) return engine.status();

  std::vector<GenerateRequest> free_running, forced;
  for (const std::vector<int32_t>& prompt : prompts) {
    free_running.push_back(GreedyRequest(prompt, tokens));
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    for (int k = 0; k < tokens; k += stride) {
      std::vector<int32_t> context = prompts[i];
      context.insert(context.end(), expected[i].begin(), expected[i].begin() + k);
      forced.push_back(GreedyRequest(context, 1));
    }
  }
  absl::StatusOr<std::vector<std::vector<int32_t>>> free_out = Generate(**engine, free_running);
  if (!free_out.ok()) return free_out.status();
  absl::StatusOr<std::vector<std::vector<int32_t>>> forced_out = Generate(**engine, forced);
  if (!forced_out.ok()) return forced_out.status();

  std::vector<Agreement> results(prompts.size());
  size_t next_forced = 0;
  const int checks = (tokens + stride - 1) / stride;
  for (size_t i = 0; i < prompts.size(); ++i) {
    Agreement& a = results[i];
    a.first_divergence = tokens;
    int matches = 0;
    for (int t = 0; t < tokens; ++t) {
      if ((*free_out)[i][t] == expected[i][t]) {
        ++matches;
      } else if (a.first_divergence == tokens) {
        a.first_divergence = t;
      }
    }
    a.match_rate = static_cast<double>(matches) / tokens;
    int forced_matches = 0;
    for (int k = 0; k < tokens; k += stride) {
      if ((*forced_out)[next_forced++][0] == expected[i][k]) ++forced_matches;
    }
    a.teacher_forced = static_cast<double>(forced_matches) / checks;
  }
  return results;
}

int Run() {
  const int num_prompts = absl::GetFlag(FLAGS_prompts);
  const int tokens = absl::GetFlag(FLAGS_tokens);
  absl::StatusOr<ReferenceLlama> reference = ReferenceLlama::Load(kDefaultModelPath);
  if (!reference.ok()) {
    std::fprintf(stderr, "%s\n", reference.status().ToString().c_str());
    return 1;
  }
  const std::vector<std::vector<int32_t>> prompts =
      ModelPrompts(*reference, num_prompts, absl::GetFlag(FLAGS_min_prompt),
                   absl::GetFlag(FLAGS_max_prompt), absl::GetFlag(FLAGS_seed));
  std::vector<std::vector<int32_t>> expected;
  for (const std::vector<int32_t>& prompt : prompts) {
    expected.push_back(reference->Greedy(prompt, tokens));
  }
  const QuantMode modes[] = {QuantMode::kSymmetric, QuantMode::kAsymmetric};
  std::vector<Agreement> results[2];
  for (int m = 0; m < 2; ++m) {
    absl::StatusOr<std::vector<Agreement>> measured = Measure(modes[m], prompts, expected);
    if (!measured.ok()) {
      std::fprintf(stderr, "%s\n", measured.status().ToString().c_str());
      return 1;
    }
    results[m] = std::move(*measured);
  }

  std::printf(
      "stories260K, greedy, %d prompts x %d tokens, KV group 8, fp16 parameters, teacher-forced "
      "every %d positions\n\n",
      num_prompts, tokens, absl::GetFlag(FLAGS_stride));
  std::printf(
      "| prompt | prompt tokens | sym: first divergence | sym: match rate | sym: teacher-forced "
      "| asym: first divergence | asym: match rate | asym: teacher-forced |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  Agreement mean[2];
  for (int i = 0; i < num_prompts; ++i) {
    std::printf("| %d | %zu |", i, prompts[i].size());
    for (int m = 0; m < 2; ++m) {
      const Agreement& a = results[m][i];
      std::printf(" %d | %.3f | %.3f |", a.first_divergence, a.match_rate, a.teacher_forced);
      mean[m].first_divergence += a.first_divergence;
      mean[m].match_rate += a.match_rate / num_prompts;
      mean[m].teacher_forced += a.teacher_forced / num_prompts;
    }
    std::printf("\n");
  }
  std::printf("| mean | |");
  for (int m = 0; m < 2; ++m) {
    std::printf(" %.1f | %.3f | %.3f |",
                static_cast<double>(mean[m].first_divergence) / num_prompts, mean[m].match_rate,
                mean[m].teacher_forced);
  }
  std::printf("\n");

  // Control: the reference itself with its K/V rounded to fp16 (what an unquantized fp16 cache
  // would hold), to show how much of the drift any rounding of K/V causes in this model.
  absl::StatusOr<ReferenceLlama> fp16 = ReferenceLlama::Load(kDefaultModelPath);
  if (!fp16.ok()) return 1;
  fp16->set_kv_round_trip([](float* row, int head_dim) {
    for (int i = 0; i < head_dim; ++i) row[i] = HalfBitsToFloat(FloatToHalfBits(row[i]));
  });
  double first = 0, match = 0;
  for (int i = 0; i < num_prompts; ++i) {
    const std::vector<int32_t> out = fp16->Greedy(prompts[i], tokens);
    int t = 0;
    while (t < tokens && out[t] == expected[i][t]) ++t;
    first += static_cast<double>(t) / num_prompts;
    int matches = 0;
    for (int k = 0; k < tokens; ++k) matches += out[k] == expected[i][k];
    match += static_cast<double>(matches) / tokens / num_prompts;
  }
  std::printf(
      "\ncontrol, fp16 K/V in the reference: mean first divergence %.1f, mean match "
      "rate %.3f\n",
      first, match);
  return 0;
}

}  // namespace
}  // namespace int4kv

int main(int argc, char** argv) {
  int4kv::ParseFlagsOnly(
      argc, argv,
      "How closely greedy generation over the INT4 KV cache follows the float32 reference "
      "on the stories260K model (docs/ACCURACY.md). Example: int4_agreement");
  return int4kv::Run();
}
