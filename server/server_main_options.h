// Parsing of the int4kv_server command line into native values (the flags themselves are
// defined in server_main.cc): sizes, enums, listen addresses, and the files the server reads.
#ifndef INT4KV_SERVER_SERVER_MAIN_OPTIONS_H_
#define INT4KV_SERVER_SERVER_MAIN_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/dtype.h"
#include "kv_cache/int4_layout.h"
#include "server/engine_config.h"
#include "server/model_config.h"
#include "server/model_source.h"

namespace int4kv {

// --kv_cache_size: empty (the engine's default: max_batch * max_seq_len slots), a byte count
// ("268435456", "256MiB", "1.5GiB", "300MB"; K/M/G/T and KiB.. are powers of 1024, KB.. of
// 1000), or a fraction of free GPU memory written with a decimal point, in (0, 1] ("0.9").
struct KvCacheSize {
  int64_t bytes = 0;          // > 0: a byte budget (EngineConfig::kv_budget_bytes)
  double gpu_fraction = 0.0;  // > 0: EngineConfig::kv_gpu_memory_fraction
};
absl::StatusOr<KvCacheSize> ParseKvCacheSize(absl::string_view text);

// "symmetric" | "asymmetric".
absl::StatusOr<QuantMode> ParseKvMode(absl::string_view text);
// "fp16" | "bf16".
absl::StatusOr<ParamDtype> ParseKvParamDtype(absl::string_view text);
// "auto" | "cpu" | "cuda", passed to EngineConfig::device as is.
absl::StatusOr<std::string> ParseBackend(absl::string_view text);
// --cuda_dtype: "fp16" | "bf16".
absl::StatusOr<DType> ParseCudaDtype(absl::string_view text);

// HOST:PORT as given; a bare port number listens on 127.0.0.1. InvalidArgument for an empty
// value, a port outside [0, 65535], or an IPv6 host without brackets ([::1]:50051).
absl::StatusOr<std::string> ParseListenAddress(absl::string_view text);

// Where a file named on the command line is: an absolute path as is; a relative one against
// the directory `bazel run` was started from ($BUILD_WORKING_DIRECTORY), else the working
// directory; with `search_runfiles`, then also against the binary's runfiles tree (the default
// model is a data dependency): $RUNFILES_DIR/int4kv, <argv0>.runfiles/int4kv and
// <this executable>.runfiles/int4kv. NotFound listing every place tried.
absl::StatusOr<std::string> FindInputFile(absl::string_view path, absl::string_view argv0,
                                          bool search_runfiles);

// Where an output file named on the command line goes: a relative path against the directory
// `bazel run` was started from ($BUILD_WORKING_DIRECTORY) when it is set, as input files are
// looked for, else as given (against the working directory).
std::string ResolveOutputPath(const std::string& path);

// FindInputFile for the file flag `flag` (as "--tls_cert") set to `value`, without the
// runfiles; an error names the flag and its value.
absl::StatusOr<std::string> FindFlagFile(absl::string_view flag, absl::string_view value,
                                         absl::string_view argv0);

// --model: what ParseModelSource calls a checkpoint path (containing '/' or ending in ".bin")
// must be a file FindInputFile finds (with the runfiles); any other value is a checkpoint if
// such a file exists ("model.ckpt"), else a preset ("tiny", "llama8b:2"). `source` keeps the
// value as given; `file` is where the checkpoint was found (empty for a preset).
struct ModelFlag {
  ModelSource source;
  std::string file;

  // `source` with a checkpoint's path where it was found: what LoadModelWeights reads.
  ModelSource Located() const {
    ModelSource located = source;
    if (located.kind == ModelSource::Kind::kCheckpoint) located.path = file;
    return located;
  }
};
// NotFound for a missing checkpoint path; InvalidArgument for a value that is neither a file
// nor a preset, naming both readings.
absl::StatusOr<ModelFlag> ResolveModelFlag(absl::string_view text, uint64_t weight_seed,
                                           absl::string_view argv0);

// The checks of EngineConfig::Resolve that need no model, before anything loads, naming the
// flags instead of the fields (InvalidArgument): --max_batch, --max_queue, --max_seq_len and
// --max_new_tokens (their lower bounds), --kv_group_size, --threads, and a --kv_cache_size
// fraction of GPU memory on device cpu (pass the device through ResolveDevice first).
absl::Status CheckEngineFlags(const EngineConfig& engine);

// The checks that need the model, once it has loaded: --max_seq_len at most the model's,
// --max_new_tokens below the sequence length, --kv_group_size dividing the model's head_dim,
// and a --kv_cache_size byte count that holds at least one token slot.
absl::Status CheckEngineFlagsForModel(const EngineConfig& engine, const ModelConfig& model);

// What the engine serves, once created, where it is less than the flags asked for.
struct ServedLimits {
  int32_t max_seq_len = 0;     // EngineInfo::max_seq_len
  int32_t max_new_tokens = 0;  // EngineInfo::max_new_tokens_limit
  int64_t slots_total = 0;     // EngineInfo::slots_total
};
// One warning for each flag whose value the KV cache lowered: --max_seq_len and
// --max_new_tokens set above what a cache of `served.slots_total` slots lets a request reach
// (its prompt and new tokens take a slot each), and a --kv_cache_size past the largest cache
// (kMaxCapacitySlots slots), which adds nothing.
std::vector<std::string> LoweredLimitWarnings(const EngineConfig& engine,
                                              const ServedLimits& served);

// The whole file; NotFound / Internal naming `what` and the path, InvalidArgument for a
// directory.
absl::StatusOr<std::string> ReadInputFile(const std::string& path, absl::string_view what);

// The bearer token from --auth_token or --auth_token_file (its contents without surrounding
// whitespace, so that the secret stays out of the process list); empty when neither is set.
// Errors name the flag: InvalidArgument for both set at once, a file holding only whitespace,
// or a token with a character outside printable ASCII or a space (it could never match the
// header a client sends); NotFound for a file that cannot be read.
absl::StatusOr<std::string> ResolveAuthToken(absl::string_view token_flag,
                                             absl::string_view token_file, absl::string_view argv0);

}  // namespace int4kv

#endif  // INT4KV_SERVER_SERVER_MAIN_OPTIONS_H_
