// Runs the engine from the command line: loads a model source, submits one prompt (token ids)
// and prints the generated ids, the finish reason and the usage.
//
//   bazel run -c opt //server:generate -- --model=llama8b:1 --prompt=1,306,4966 --max_new_tokens=8
//
// A relative --model path is the caller's, as for int4kv_server. Exit status: 0 on a normal
// finish; 2 for a bad flag value (a missing checkpoint, a prompt that is not token ids, a
// setting the engine refuses: a max_new_tokens out of range, a top_p above 1) and for a word
// that is not a flag; 1 for any other failure.
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/help_flags.h"
#include "common/parse_flags.h"
#include "server/engine.h"
#include "server/model_source.h"
#include "server/server_main_options.h"

ABSL_FLAG(std::string, model, int4kv::kDefaultModelPath,
          "tiny, llama8b[:layers] or a llama2.c checkpoint path");
ABSL_FLAG(uint64_t, weight_seed, 1, "seed of random-weight presets");
ABSL_FLAG(std::string, prompt, "1", "comma-separated prompt token ids");
ABSL_FLAG(int, max_new_tokens, 32, "tokens to generate");
ABSL_FLAG(float, temperature, 0.0f, "0: greedy");
ABSL_FLAG(int, top_k, 0, "0: off");
ABSL_FLAG(float, top_p, 1.0f, "nucleus mass");
ABSL_FLAG(uint64_t, seed, 1, "sampling seed");
ABSL_FLAG(int, max_seq_len, 0, "0: the model's");
ABSL_FLAG(int, threads, 0, "CPU threads; 0: one per core");

namespace {

// The exit status for a failure: 2 where the flags asked for something the engine refuses.
int ExitStatusFor(const absl::Status& status) {
  std::fprintf(stderr, "%s\n", status.ToString().c_str());
  return status.code() == absl::StatusCode::kInvalidArgument ||
                 status.code() == absl::StatusCode::kNotFound
             ? 2
             : 1;
}

}  // namespace

int main(int argc, char** argv) {
  int4kv::HelpListsFlagsOf(__FILE__);
  int4kv::ParseFlagsOnly(
      argc, argv,
      "Runs one prompt (token ids) through the engine in this process, no server, and "
      "prints the generated ids. Example: generate --prompt=1,306,4966 --max_new_tokens=8");
  int4kv::GenerateRequest request;
  for (absl::string_view piece : absl::StrSplit(absl::GetFlag(FLAGS_prompt), ',')) {
    int32_t token;
    if (!absl::SimpleAtoi(piece, &token)) {
      std::fprintf(stderr, "--prompt: '%s' is not a token id\n", std::string(piece).c_str());
      return 2;
    }
    request.prompt.push_back(token);
  }
  request.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  request.sampling.temperature = absl::GetFlag(FLAGS_temperature);
  request.sampling.top_k = absl::GetFlag(FLAGS_top_k);
  request.sampling.top_p = absl::GetFlag(FLAGS_top_p);
  request.sampling.seed = absl::GetFlag(FLAGS_seed);

  int4kv::EngineConfig config;
  config.max_batch = 1;
  config.max_seq_len = absl::GetFlag(FLAGS_max_seq_len);
  config.threads = absl::GetFlag(FLAGS_threads);
  const absl::StatusOr<int4kv::ModelFlag> model = int4kv::ResolveModelFlag(
      absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_weight_seed), argv[0]);
  if (!model.ok()) return ExitStatusFor(model.status());
  const absl::Time start = absl::Now();
  absl::StatusOr<int4kv::LlamaWeights> weights =
      int4kv::LoadModelWeights(model->Located(), config.threads);
  if (!weights.ok()) return ExitStatusFor(weights.status());
  absl::StatusOr<std::unique_ptr<int4kv::Engine>> engine = int4kv::Engine::Create(
      config, std::make_shared<const int4kv::LlamaWeights>(std::move(*weights)),
      model->source.ToString());
  if (!engine.ok()) return ExitStatusFor(engine.status());
  const int4kv::EngineInfo info = (*engine)->GetInfo();
  std::printf(
      "model %s (%s), KV %lld slots x %lld bytes, loaded in %.2f s\n", info.model_source.c_str(),
      info.model.DebugString().c_str(), static_cast<long long>(info.slots_total),
      static_cast<long long>(info.kv_bytes_per_token), absl::ToDoubleSeconds(absl::Now() - start));
  absl::StatusOr<std::shared_ptr<int4kv::RequestStream>> stream = (*engine)->Submit(request);
  if (!stream.ok()) return ExitStatusFor(stream.status());
  const int4kv::GenerationResult result = (*stream)->ReadAll();
  std::printf("tokens: %s\n", absl::StrJoin(result.tokens, ",").c_str());
  std::printf("finish: %s %s\n",
              std::string(int4kv::FinishReasonName(result.finish_reason)).c_str(),
              result.status.ToString().c_str());
  std::printf("usage: prompt %d, generated %d, time to first token %.1f ms, total %.1f ms\n",
              result.usage.prompt_tokens, result.usage.generated_tokens,
              absl::ToDoubleMilliseconds(result.usage.time_to_first_token),
              absl::ToDoubleMilliseconds(result.usage.total_time));
  return result.status.ok() ? 0 : 1;
}
