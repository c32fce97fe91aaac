// Shared pieces of the server tests: the real model, loaded once, and engine set-ups.
#ifndef INT4KV_SERVER_TESTING_TEST_UTIL_H_
#define INT4KV_SERVER_TESTING_TEST_UTIL_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/engine.h"
#include "server/engine_config.h"
#include "server/llama_weights.h"
#include "server/scheduler.h"

namespace int4kv {

// The value of `value`; prints "`what`: <status>" and aborts the test binary on an error. For
// set-up that has no test to fail (static fixtures, helper constructors).
template <typename T>
T ValueOrDie(absl::StatusOr<T> value, const char* what) {
  if (!value.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, value.status().ToString().c_str());
    std::abort();
  }
  return std::move(*value);
}

// Prints "`what`: <status>" and aborts the test binary if `status` is an error, as ValueOrDie.
inline void CheckOk(const absl::Status& status, const char* what) {
  if (!status.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, status.ToString().c_str());
    std::abort();
  }
}

// stories260K (testdata/models/stories260K.bin), loaded once per test binary; aborts the test
// binary with the loader's message if it cannot be read.
std::shared_ptr<const LlamaWeights> Stories260K();

// A KvAttentionFactory that keeps K/V in float32 (no quantization).
KvAttentionFactory FloatAttentionFactory();

// A KvAttentionFactory of the INT4 attention (1 backend thread) whose Attend fails with
// InvalidArgument "injected attention failure" whenever `fail_now` returns true (called once
// per Attend, from the scheduler thread), to drive the model-error path.
KvAttentionFactory FailingInt4AttentionFactory(std::function<bool()> fail_now);

// A small engine config for stories260K: batch 8, 2 threads.
EngineConfig SmallConfig();

// A greedy request that runs exactly max_new_tokens tokens (EOS ignored).
GenerateRequest GreedyRequest(std::vector<int32_t> prompt, int32_t max_new_tokens);

// Submits `request`, reads its stream to the end; aborts the test on a submit error.
GenerationResult RunToEnd(Engine& engine, const GenerateRequest& request);

}  // namespace int4kv

#endif  // INT4KV_SERVER_TESTING_TEST_UTIL_H_
