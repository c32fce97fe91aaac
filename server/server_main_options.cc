#include "server/server_main_options.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"
#include "kv_cache/kv_cache_config.h"

namespace int4kv {
namespace {

constexpr char kWorkspaceName[] = "int4kv";

// std::ifstream opens a directory on Linux and reads nothing from it.
bool IsDirectory(const std::string& path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

// Anything that opens for reading but a directory: a regular file, a symlink to one, a pipe
// such as /dev/stdin.
bool IsFile(const std::string& path) { return !IsDirectory(path) && std::ifstream(path).good(); }

std::string JoinPath(absl::string_view dir, absl::string_view path) {
  if (dir.empty()) return std::string(path);
  return absl::StrCat(absl::StripSuffix(dir, "/"), "/", path);
}

// The directory `bazel run` was started from ($BUILD_WORKING_DIRECTORY), or empty.
std::string UserDirectory() {
  const char* dir = std::getenv("BUILD_WORKING_DIRECTORY");
  return dir != nullptr ? std::string(dir) : std::string();
}

std::string SelfExecutable() {
  char buffer[4096];
  const ssize_t n = readlink("/proc/self/exe", buffer, sizeof(buffer) - 1);
  return n > 0 ? std::string(buffer, n) : "";
}

}  // namespace

absl::StatusOr<KvCacheSize> ParseKvCacheSize(absl::string_view text) {
  KvCacheSize size;
  const absl::string_view value = absl::StripAsciiWhitespace(text);
  if (value.empty()) return size;
  auto invalid = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "--kv_cache_size = '", text,
        "' is invalid: must be a byte count (268435456, 256MiB, 1.5GiB, 300MB) or a fraction of "
        "free GPU memory in (0, 1] with a decimal point (0.9)"));
  };
  size_t digits = 0;
  while (digits < value.size() &&
         (absl::ascii_isdigit(static_cast<unsigned char>(value[digits])) || value[digits] == '.')) {
    ++digits;
  }
  const absl::string_view number = value.substr(0, digits);
  const std::string unit = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(value.substr(digits)));
  double amount = 0;
  if (number.empty() || !absl::SimpleAtod(number, &amount) || !std::isfinite(amount)) {
    return invalid();
  }
  if (unit.empty() && absl::StrContains(number, '.')) {
    if (!(amount > 0.0 && amount <= 1.0)) return invalid();
    size.gpu_fraction = amount;
    return size;
  }
  double multiplier = 0;
  struct Unit {
    const char* name;
    double multiplier;
  };
  static const Unit kUnits[] = {
      {"", 1},
      {"B", 1},
      {"K", 1024.0},
      {"KIB", 1024.0},
      {"KB", 1e3},
      {"M", 1048576.0},
      {"MIB", 1048576.0},
      {"MB", 1e6},
      {"G", 1073741824.0},
      {"GIB", 1073741824.0},
      {"GB", 1e9},
      {"T", 1099511627776.0},
      {"TIB", 1099511627776.0},
      {"TB", 1e12},
  };
  for (const Unit& u : kUnits) {
    if (unit == u.name) multiplier = u.multiplier;
  }
  if (multiplier == 0) return invalid();
  const double bytes = std::floor(amount * multiplier);
  if (!(bytes >= 1.0 && bytes < 9.0e18)) {
    return absl::InvalidArgumentError(absl::StrCat("--kv_cache_size = '", text,
                                                   "' is invalid: must be at least 1 byte and "
                                                   "below 9e18 bytes"));
  }
  size.bytes = static_cast<int64_t>(bytes);
  return size;
}

absl::StatusOr<QuantMode> ParseKvMode(absl::string_view text) {
  if (text == "symmetric") return QuantMode::kSymmetric;
  if (text == "asymmetric") return QuantMode::kAsymmetric;
  return absl::InvalidArgumentError(
      absl::StrCat("--kv_mode = '", text, "' is invalid: must be symmetric or asymmetric"));
}

absl::StatusOr<ParamDtype> ParseKvParamDtype(absl::string_view text) {
  if (text == "fp16") return ParamDtype::kFloat16;
  if (text == "bf16") return ParamDtype::kBFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("--kv_param_dtype = '", text, "' is invalid: must be fp16 or bf16"));
}

absl::StatusOr<std::string> ParseBackend(absl::string_view text) {
  if (text == "auto" || text == "cpu" || text == "cuda") return std::string(text);
  return absl::InvalidArgumentError(
      absl::StrCat("--backend = '", text, "' is invalid: must be auto, cpu or cuda"));
}

absl::StatusOr<DType> ParseCudaDtype(absl::string_view text) {
  if (text == "fp16") return DType::kFloat16;
  if (text == "bf16") return DType::kBFloat16;
  return absl::InvalidArgumentError(
      absl::StrCat("--cuda_dtype = '", text, "' is invalid: must be fp16 or bf16"));
}

absl::StatusOr<std::string> ParseListenAddress(absl::string_view text) {
  const absl::string_view value = absl::StripAsciiWhitespace(text);
  auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("--port = '", text, "' is invalid: ", why,
                                                   " (HOST:PORT, e.g. 127.0.0.1:50051)"));
  };
  if (value.empty()) return invalid("empty");
  const size_t colon = value.rfind(':');
  const absl::string_view port_text =
      colon == absl::string_view::npos ? value : value.substr(colon + 1);
  int port = -1;
  if (!absl::SimpleAtoi(port_text, &port) || port < 0 || port > 65535) {
    return invalid("the port must be a number in [0, 65535]");
  }
  if (colon == absl::string_view::npos) return absl::StrCat("127.0.0.1:", port);
  if (colon == 0) return invalid("the host is empty");
  // An IPv6 host goes in brackets: gRPC reads "::1" as a host without a port (443).
  const absl::string_view host = value.substr(0, colon);
  const bool bracketed = absl::StartsWith(host, "[") && absl::EndsWith(host, "]");
  if (!bracketed && absl::StrContains(host, ':')) {
    return invalid("an IPv6 host must be in brackets, as in [::1]:50051");
  }
  return std::string(value);
}

absl::StatusOr<std::string> FindInputFile(absl::string_view path, absl::string_view argv0,
                                          bool search_runfiles) {
  if (path.empty()) return absl::InvalidArgumentError("the file path is empty");
  if (absl::StartsWith(path, "/")) {
    if (IsFile(std::string(path))) return std::string(path);
    if (IsDirectory(std::string(path))) {
      return absl::InvalidArgumentError(absl::StrCat(path, " is a directory, not a file"));
    }
    return absl::NotFoundError(absl::StrCat("no readable file at ", path));
  }
  // Each place once: the runfiles found from argv0 and from this executable are often the same.
  std::vector<std::string> candidates;
  auto add = [&candidates](std::string candidate) {
    if (std::find(candidates.begin(), candidates.end(), candidate) == candidates.end()) {
      candidates.push_back(std::move(candidate));
    }
  };
  if (const std::string user_dir = UserDirectory(); !user_dir.empty()) {
    add(JoinPath(user_dir, path));
  }
  add(std::string(path));
  if (search_runfiles) {
    const char* runfiles = std::getenv("RUNFILES_DIR");
    if (runfiles != nullptr && runfiles[0] != '\0') {
      add(JoinPath(JoinPath(runfiles, kWorkspaceName), path));
    }
    if (!argv0.empty()) add(JoinPath(absl::StrCat(argv0, ".runfiles/", kWorkspaceName), path));
    const std::string self = SelfExecutable();
    if (!self.empty()) add(JoinPath(absl::StrCat(self, ".runfiles/", kWorkspaceName), path));
  }
  for (const std::string& candidate : candidates) {
    if (IsFile(candidate)) return candidate;
  }
  return absl::NotFoundError(
      absl::StrCat("no readable file ", path, "; tried ", absl::StrJoin(candidates, ", ")));
}

std::string ResolveOutputPath(const std::string& path) {
  const std::string user_dir = UserDirectory();
  if (path.empty() || absl::StartsWith(path, "/") || user_dir.empty()) return path;
  return JoinPath(user_dir, path);
}

absl::StatusOr<std::string> FindFlagFile(absl::string_view flag, absl::string_view value,
                                         absl::string_view argv0) {
  absl::StatusOr<std::string> path = FindInputFile(value, argv0, false);
  if (!path.ok()) {
    return absl::Status(path.status().code(),
                        absl::StrCat(flag, " = '", value, "': ", path.status().message()));
  }
  return path;
}

absl::StatusOr<ModelFlag> ResolveModelFlag(absl::string_view text, uint64_t weight_seed,
                                           absl::string_view argv0) {
  ModelFlag flag;
  absl::StatusOr<ModelSource> parsed = ParseModelSource(text, weight_seed);
  if (parsed.ok() && parsed->kind == ModelSource::Kind::kCheckpoint) {
    flag.source = *std::move(parsed);
    absl::StatusOr<std::string> file = FindInputFile(text, argv0, true);
    if (!file.ok()) {
      return absl::Status(file.status().code(),
                          absl::StrCat("--model = '", text, "': ", file.status().message()));
    }
    flag.file = *std::move(file);
    return flag;
  }
  if (text.empty()) {
    return absl::Status(parsed.status().code(),
                        absl::StrCat("--model: ", parsed.status().message()));
  }
  // A name that could be either: an existing file wins, so that a checkpoint need not be
  // renamed to *.bin or given a directory to be loaded.
  absl::StatusOr<std::string> file = FindInputFile(text, argv0, true);
  if (file.ok()) {
    flag.source.kind = ModelSource::Kind::kCheckpoint;
    flag.source.path = std::string(text);
    flag.source.seed = weight_seed;
    flag.file = *std::move(file);
    return flag;
  }
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--model = '", text, "' is neither a checkpoint file (",
                     file.status().message(), ") nor a preset (", parsed.status().message(), ")"));
  }
  flag.source = *std::move(parsed);
  return flag;
}

namespace {

absl::Status InvalidFlag(absl::string_view flag, int64_t value, absl::string_view allowed) {
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, " = ", value, " is invalid: must be ", allowed));
}

}  // namespace

absl::Status CheckEngineFlags(const EngineConfig& engine) {
  if (engine.max_batch < 1 || engine.max_batch > kMaxEngineBatch) {
    return InvalidFlag("max_batch", engine.max_batch,
                       absl::StrCat("in [1, ", kMaxEngineBatch, "]"));
  }
  if (engine.max_queue < 1 || engine.max_queue > kMaxEngineQueue) {
    return InvalidFlag("max_queue", engine.max_queue,
                       absl::StrCat("in [1, ", kMaxEngineQueue, "]"));
  }
  if (engine.max_seq_len != 0 && engine.max_seq_len < 2) {
    return InvalidFlag("max_seq_len", engine.max_seq_len,
                       "0 (the model's) or in [2, the model's max_seq_len]");
  }
  if (engine.max_new_tokens_limit < 0) {
    return InvalidFlag("max_new_tokens", engine.max_new_tokens_limit,
                       "0 (max_seq_len - 1) or in [1, max_seq_len - 1]");
  }
  if (!IsSupportedGroupSize(engine.group_size)) {
    return InvalidFlag("kv_group_size", engine.group_size, kGroupSizeRule);
  }
  if (engine.threads < 0 || engine.threads > kMaxEngineThreads) {
    return InvalidFlag("threads", engine.threads,
                       absl::StrCat("0 (one per core) or in [1, ", kMaxEngineThreads, "]"));
  }
  if (engine.kv_gpu_memory_fraction > 0.0 && engine.device == "cpu") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--kv_cache_size = ", engine.kv_gpu_memory_fraction,
        " is a fraction of GPU memory, which needs --backend=cuda, but the backend is ",
        engine.device, ": give --kv_cache_size in bytes (e.g. 256MiB) instead"));
  }
  return absl::OkStatus();
}

absl::Status CheckEngineFlagsForModel(const EngineConfig& engine, const ModelConfig& model) {
  if (engine.max_seq_len > model.max_seq_len) {
    return InvalidFlag("max_seq_len", engine.max_seq_len,
                       absl::StrCat("0 (the model's) or in [2, ", model.max_seq_len,
                                    "] (the model's max_seq_len)"));
  }
  const int32_t max_seq_len = engine.max_seq_len == 0 ? model.max_seq_len : engine.max_seq_len;
  if (engine.max_new_tokens_limit >= max_seq_len) {
    return InvalidFlag("max_new_tokens", engine.max_new_tokens_limit,
                       absl::StrCat("0 (max_seq_len - 1) or in [1, ", max_seq_len - 1,
                                    "] (max_seq_len - 1, with max_seq_len ", max_seq_len, ")"));
  }
  if (model.head_dim() <= 0 || model.head_dim() % engine.group_size != 0) {
    return InvalidFlag("kv_group_size", engine.group_size,
                       absl::StrCat("a divisor of the model's head_dim (", model.head_dim(), ")"));
  }
  if (engine.kv_budget_bytes > 0) {
    KvCacheConfig kv = engine.KvConfig(model);
    kv.max_seq_len = max_seq_len;
    kv.capacity_slots = 1;
    // A cache the model cannot have is the engine's to report; only the budget is checked here.
    // A request needs 2 slots (one prompt token, one new token), and slot 0 is reserved.
    if (kv.Validate().ok() && engine.kv_budget_bytes < 3 * kv.BytesPerToken()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--kv_cache_size = ", engine.kv_budget_bytes,
          " bytes holds fewer than the 2 token slots a request needs: ", kv.BytesPerToken(),
          " bytes per token for this model and KV layout, and one slot is "
          "reserved (need at least ",
          3 * kv.BytesPerToken(), ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadInputFile(const std::string& path, absl::string_view what) {
  if (IsDirectory(path)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", path, " is a directory"));
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat(what, ": cannot open ", path));
  std::ostringstream contents;
  contents << file.rdbuf();
  if (file.bad()) return absl::InternalError(absl::StrCat(what, ": error reading ", path));
  return contents.str();
}

absl::StatusOr<std::string> ResolveAuthToken(absl::string_view token_flag,
                                             absl::string_view token_file,
                                             absl::string_view argv0) {
  if (!token_flag.empty() && !token_file.empty()) {
    return absl::InvalidArgumentError(
        "--auth_token and --auth_token_file are alternatives: set one of them");
  }
  std::string token(token_flag);
  absl::string_view flag = "--auth_token";
  if (!token_file.empty()) {
    flag = "--auth_token_file";
    ASSIGN_OR_RETURN(const std::string path, FindFlagFile("--auth_token_file", token_file, argv0));
    ASSIGN_OR_RETURN(const std::string contents, ReadInputFile(path, "--auth_token_file"));
    token = std::string(absl::StripAsciiWhitespace(contents));
    if (token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--auth_token_file = '", token_file, "' holds no token"));
    }
  }
  for (size_t i = 0; i < token.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(token[i]);
    if (c < 0x21 || c > 0x7e) {
      // The token is a secret: its position is named, never its characters.
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": the token's character ", i + 1, " of ", token.size(),
                       " is not printable ASCII or is a space; a client could never send it"));
    }
  }
  return token;
}

std::vector<std::string> LoweredLimitWarnings(const EngineConfig& engine,
                                              const ServedLimits& served) {
  std::vector<std::string> warnings;
  const std::string cache = absl::StrCat("the KV cache holds ", served.slots_total,
                                         " token slots, and a request takes one for each prompt "
                                         "and new token");
  if (engine.max_seq_len > served.max_seq_len) {
    warnings.push_back(absl::StrCat("--max_seq_len = ", engine.max_seq_len, " is lowered to ",
                                    served.max_seq_len, ": ", cache));
  }
  if (engine.max_new_tokens_limit > served.max_new_tokens) {
    warnings.push_back(absl::StrCat("--max_new_tokens = ", engine.max_new_tokens_limit,
                                    " is lowered to ", served.max_new_tokens, ": ", cache));
  }
  if (served.slots_total >= kMaxCapacitySlots) {
    warnings.push_back(absl::StrCat("--kv_cache_size: the KV cache holds at most ",
                                    kMaxCapacitySlots,
                                    " token slots (slot numbers are 32-bit); a larger size adds "
                                    "nothing"));
  }
  return warnings;
}

}  // namespace int4kv
