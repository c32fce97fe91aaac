// int4kv_server: the gRPC token-generation server.
//
//   bazel run -c opt //server:int4kv_server -- --port=127.0.0.1:50051 --backend=cpu
//
// Start-up: the port opens first with health NOT_SERVING (Generate answers UNAVAILABLE), then
// the model loads and the engine starts, then health turns SERVING. SIGINT or SIGTERM while the
// model loads stops the process at once (exit 0, never SERVING), whatever the load is waiting
// for. SIGINT or SIGTERM once serving drains:
// health NOT_SERVING, new requests UNAVAILABLE, running and queued requests get up to
// --drain_timeout to finish (a second signal ends that wait), the rest are cancelled (status
// UNAVAILABLE, saying so), the handlers send every finish and clients get 100 ms to read them,
// gRPC shuts down, and the process exits 0. An engine that stops serving after repeated
// failed model steps (kFailedStepsToStop, engine.h) turns health NOT_SERVING and logs why;
// the process then waits for its signal like a serving one.
//
// Exit status: 0 after a drain or a signal while loading; 2 for a bad flag value (before the
// port opens, except for flags that do not fit the model, found once it has loaded) or a word
// that is not a flag; 1 if the port cannot be opened or the engine does not start, and also
// for an unknown flag or one whose value does not parse (Abseil's flag parser exits 1 itself).
//
// Thread ownership: main() owns the engine and the gRPC server; a loader thread creates the
// engine while main waits for a signal or the loader's end, then main blocks in sigwait; during
// the drain a second thread waits for another signal. SIGINT and SIGTERM are blocked in every
// thread (the mask is set before any thread starts), so only these waits see them.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/cuda_check.h"
#include "common/help_flags.h"
#include "common/monotonic_time.h"
#include "common/parse_flags.h"
#include "common/status_macros.h"
#include "server/engine.h"
#include "server/engine_health.h"
#include "server/grpc_server.h"
#include "server/grpc_version.h"
#include "server/model_source.h"
#include "server/server_main_options.h"
#include "server/service.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, port, "127.0.0.1:50051",
          "HOST:PORT to listen on (a bare PORT means 127.0.0.1:PORT); port 0 picks a free port, "
          "written to --port_file");
ABSL_FLAG(std::string, port_file, "",
          "if set, the port listened on is written to this file once the port is open");
ABSL_FLAG(std::string, model, int4kv::kDefaultModelPath,
          "a llama2.c checkpoint path (relative paths: from the directory bazel run was started "
          "in, then the runfiles) or a preset: tiny, llama8b[:layers] (random weights); an "
          "existing file wins over a preset name");
ABSL_FLAG(uint64_t, weight_seed, 1, "seed of the random weights of a preset model");
ABSL_FLAG(std::string, backend, "auto",
          "auto, cpu or cuda (EngineConfig::device); auto: cuda when a GPU is visible, else cpu");
ABSL_FLAG(std::string, cuda_dtype, "fp16", "cuda: weight and activation dtype, fp16 or bf16");
ABSL_FLAG(int32_t, kv_group_size, 8,
          "KV elements per quantization group: 8, 16, 32, 64 or 128, dividing head_dim");
ABSL_FLAG(std::string, kv_mode, "symmetric", "KV quantization: symmetric or asymmetric");
ABSL_FLAG(std::string, kv_param_dtype, "fp16", "dtype of the KV scales (and zeros): fp16 or bf16");
ABSL_FLAG(
    std::string, kv_cache_size, "",
    "KV cache size: bytes (268435456, 256MiB, 1.5GiB; EngineConfig::kv_budget_bytes) or, on "
    "cuda, a fraction in (0, 1] written with a decimal point (0.9, 1.0; a bare 1 is one byte) "
    "of the GPU memory left free after the model and the other start-up buffers "
    "(EngineConfig::kv_gpu_memory_fraction); empty: max_batch * "
    "max_seq_len token slots");
ABSL_FLAG(int32_t, max_batch, 8, "requests generating at the same time, at most");
ABSL_FLAG(int32_t, max_queue, 64,
          "requests waiting for admission beyond those the next step admits (while batch "
          "rows and KV slots last), at most; more get RESOURCE_EXHAUSTED");
ABSL_FLAG(int32_t, max_seq_len, 0,
          "longest prompt + max_new_tokens; 0: the model's max_seq_len (also the upper limit)");
ABSL_FLAG(int32_t, max_new_tokens, 0,
          "largest max_new_tokens a request may ask for; 0: max_seq_len - 1");
ABSL_FLAG(int32_t, threads, 0, "CPU threads of the model and the CPU backend; 0: one per core");
ABSL_FLAG(bool, cuda_graphs, true, "cuda backend: replay decode steps as captured CUDA graphs");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(30),
          "on SIGINT/SIGTERM, how long running requests may take to finish before they are "
          "cancelled");
ABSL_FLAG(absl::Duration, write_stall_timeout, absl::Seconds(60),
          "a Generate call whose client has not read a response for this long (its HTTP/2 "
          "window closed) is cancelled, freeing its thread; inf: never");
ABSL_FLAG(int32_t, max_rpc_threads, 0,
          "most gRPC threads for Generate calls: each holds one until it ends and one polls, so "
          "N run N - 1 calls at once; calls beyond them get RESOURCE_EXHAUSTED; 0: no limit");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain: serve TLS (needs --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, auth_token, "",
          "if set, Generate and GetServerInfo require the metadata \"authorization: Bearer "
          "<token>\" (health and reflection stay open)");
ABSL_FLAG(std::string, auth_token_file, "",
          "--auth_token read from this file (surrounding whitespace dropped), so that the "
          "token does not appear in the process list");
ABSL_FLAG(std::string, log_level, "info", "trace, debug, info, warn, error or off");

namespace int4kv {
namespace {

// After the drain, how long clients get to read the last finishes before gRPC closes their
// connections (see the end of Run).
constexpr absl::Duration kFinishLinger = absl::Milliseconds(100);
// The longest the drain waits for Generate handlers to return once the engine has stopped.
constexpr absl::Duration kHandlersReturnLimit = absl::Seconds(1);

struct Options {
  EngineConfig engine;
  KvCacheSize kv_cache_size;
  std::string model;     // as given
  ModelFlag model_flag;  // the source (reported by GetServerInfo) and where a checkpoint is
  GrpcServerOptions server;
  std::string port_file;
  std::string auth_token;
  absl::Duration drain_timeout;
  absl::Duration write_stall_timeout;
};

// InvalidArgument naming `flag` unless `pem` holds a PEM block whose label ends in `label`
// ("CERTIFICATE"; "PRIVATE KEY" also matches "RSA PRIVATE KEY" and "EC PRIVATE KEY").
absl::Status CheckPemBlock(absl::string_view flag, const std::string& path, const std::string& pem,
                           absl::string_view label) {
  const std::string end = absl::StrCat(label, "-----");
  for (size_t begin = pem.find("-----BEGIN "); begin != std::string::npos;
       begin = pem.find("-----BEGIN ", begin + 1)) {
    const size_t line_end = pem.find('\n', begin);
    const absl::string_view line = absl::string_view(pem).substr(
        begin, line_end == std::string::npos ? std::string::npos : line_end - begin);
    if (absl::EndsWith(absl::StripTrailingAsciiWhitespace(line), end)) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(flag, " = '", path, "' holds no PEM ", label,
                                                 " block ('-----BEGIN ... ", end, "')"));
}

absl::StatusOr<Options> ParseOptions(const char* argv0) {
  Options options;
  ASSIGN_OR_RETURN(options.server.address, ParseListenAddress(absl::GetFlag(FLAGS_port)));
  options.port_file = ResolveOutputPath(absl::GetFlag(FLAGS_port_file));
  options.model = absl::GetFlag(FLAGS_model);
  ASSIGN_OR_RETURN(options.model_flag,
                   ResolveModelFlag(options.model, absl::GetFlag(FLAGS_weight_seed), argv0));
  EngineConfig& engine = options.engine;
  ASSIGN_OR_RETURN(engine.device, ParseBackend(absl::GetFlag(FLAGS_backend)));
  ASSIGN_OR_RETURN(engine.cuda_dtype, ParseCudaDtype(absl::GetFlag(FLAGS_cuda_dtype)));
  engine.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  engine.group_size = absl::GetFlag(FLAGS_kv_group_size);
  ASSIGN_OR_RETURN(engine.quant_mode, ParseKvMode(absl::GetFlag(FLAGS_kv_mode)));
  ASSIGN_OR_RETURN(engine.param_dtype, ParseKvParamDtype(absl::GetFlag(FLAGS_kv_param_dtype)));
  ASSIGN_OR_RETURN(options.kv_cache_size, ParseKvCacheSize(absl::GetFlag(FLAGS_kv_cache_size)));
  engine.kv_budget_bytes = options.kv_cache_size.bytes;
  engine.kv_gpu_memory_fraction = options.kv_cache_size.gpu_fraction;
  engine.max_batch = absl::GetFlag(FLAGS_max_batch);
  engine.max_queue = absl::GetFlag(FLAGS_max_queue);
  engine.max_seq_len = absl::GetFlag(FLAGS_max_seq_len);
  engine.max_new_tokens_limit = absl::GetFlag(FLAGS_max_new_tokens);
  engine.threads = absl::GetFlag(FLAGS_threads);
  // Resolved now, as the engine would, so that the checks below see the device it will use.
  engine.device = ResolveDevice(engine.device);
  if (engine.device == "cuda" && CudaDeviceCount() == 0) {
    return absl::InvalidArgumentError(
        "--backend = 'cuda' needs a CUDA device, and none is visible (use --backend=cpu, or "
        "auto to take a GPU when there is one)");
  }
  // Before the port opens and the model loads; the engine repeats these checks, naming its
  // config's fields rather than the flags.
  RETURN_IF_ERROR(CheckEngineFlags(engine));
  if (engine.device == "cpu" &&
      (absl::GetFlag(FLAGS_cuda_dtype) != "fp16" || !engine.cuda_graphs)) {
    // Not an error: --backend=auto falls back to cpu on a host without a visible GPU.
    spdlog::warn(
        "--cuda_dtype and --cuda_graphs apply to the cuda backend only; the backend is "
        "cpu, so they are ignored");
  }
  options.drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  if (options.drain_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--drain_timeout = ", absl::FormatDuration(options.drain_timeout),
                     " is invalid: must be >= 0"));
  }
  options.write_stall_timeout = absl::GetFlag(FLAGS_write_stall_timeout);
  if (options.write_stall_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--write_stall_timeout = ", absl::FormatDuration(options.write_stall_timeout),
                     " is invalid: must be > 0 (inf: never)"));
  }
  // gRPC keeps one of them polling for calls, so N threads run N - 1 Generate calls at once
  // (GrpcServerTest.MaxThreadsRefusesCallsBeyondItWithResourceExhausted), and 1 would refuse
  // every one. Health and GetServerInfo run on the callback API and take none of them.
  constexpr int32_t kMinRpcThreads = 2;
  const int32_t max_rpc_threads = absl::GetFlag(FLAGS_max_rpc_threads);
  if (max_rpc_threads != 0 && max_rpc_threads < kMinRpcThreads) {
    return absl::InvalidArgumentError(absl::StrCat("--max_rpc_threads = ", max_rpc_threads,
                                                   " is invalid: must be 0 (no limit) or >= ",
                                                   kMinRpcThreads));
  }
  options.server.max_threads = max_rpc_threads;
  const std::string cert = absl::GetFlag(FLAGS_tls_cert);
  const std::string key = absl::GetFlag(FLAGS_tls_key);
  if (cert.empty() != key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together: set both or neither");
  }
  if (!cert.empty()) {
    ASSIGN_OR_RETURN(const std::string cert_path, FindFlagFile("--tls_cert", cert, argv0));
    ASSIGN_OR_RETURN(const std::string key_path, FindFlagFile("--tls_key", key, argv0));
    ASSIGN_OR_RETURN(options.server.tls_cert_chain_pem, ReadInputFile(cert_path, "--tls_cert"));
    ASSIGN_OR_RETURN(options.server.tls_private_key_pem, ReadInputFile(key_path, "--tls_key"));
    // An empty PEM (a secret not mounted yet) must not start a plaintext server: the server
    // takes TLS from the PEMs' contents.
    const bool cert_empty = options.server.tls_cert_chain_pem.empty();
    if (cert_empty || options.server.tls_private_key_pem.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(cert_empty ? "--tls_cert" : "--tls_key",
                                                     " = '", cert_empty ? cert_path : key_path,
                                                     "' is empty: TLS needs a PEM file"));
    }
    // A file without the PEM block it should hold (whitespace, a DER file, the key and the
    // certificate swapped) is named here; gRPC, which reads the pair when the port opens,
    // would only fail to listen.
    RETURN_IF_ERROR(
        CheckPemBlock("--tls_cert", cert_path, options.server.tls_cert_chain_pem, "CERTIFICATE"));
    RETURN_IF_ERROR(
        CheckPemBlock("--tls_key", key_path, options.server.tls_private_key_pem, "PRIVATE KEY"));
  }
  ASSIGN_OR_RETURN(options.auth_token,
                   ResolveAuthToken(absl::GetFlag(FLAGS_auth_token),
                                    absl::GetFlag(FLAGS_auth_token_file), argv0));
  return options;
}

// Loads the model and starts the engine on the configured backend (the engine rejects a
// backend it cannot run, with its own message). Flags that do not fit the
// loaded model end it with their error in `flag_error` (and the same as the result).
absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(const Options& options,
                                                     absl::Status* flag_error) {
  const absl::Time start = MonotonicNow();
  ASSIGN_OR_RETURN(LlamaWeights loaded,
                   LoadModelWeights(options.model_flag.Located(), options.engine.threads));
  const auto weights = std::make_shared<const LlamaWeights>(std::move(loaded));
  spdlog::info("model {} loaded in {:.2f} s", options.model,
               absl::ToDoubleSeconds(MonotonicNow() - start));
  *flag_error = CheckEngineFlagsForModel(options.engine, weights->config);
  RETURN_IF_ERROR(*flag_error);

  return Engine::Create(options.engine, weights, options.model_flag.source.ToString());
}

const char* SignalName(int signal_number) { return signal_number == SIGINT ? "SIGINT" : "SIGTERM"; }

// Waits for SIGINT or SIGTERM (blocked in every thread, see above) until `done` is set, looking
// at `done` every 20 ms. Returns the signal, or 0 once `done` is set.
int WaitForSignalUntil(const sigset_t& signals, const std::atomic<bool>& done) {
  const timespec poll = {0, 20 * 1000 * 1000};
  while (!done.load(std::memory_order_acquire)) {
    const int signal_number = sigtimedwait(&signals, nullptr, &poll);
    if (signal_number == SIGINT || signal_number == SIGTERM) return signal_number;
  }
  return 0;
}

absl::Status WritePortFile(const std::string& path, int port) {
  const std::string temp = path + ".tmp";
  {
    std::ofstream file(temp, std::ios::trunc);
    file << port << "\n";
    if (!file) return absl::InternalError(absl::StrCat("--port_file: cannot write ", temp));
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("--port_file: cannot rename ", temp, " to ", path));
  }
  return absl::OkStatus();
}

void LogSummary(const EngineInfo& info, const ServerDetails& details, const Options& options,
                const ServiceOptions& service, const GrpcServer& server) {
  constexpr double kMiB = 1048576.0;
  spdlog::info("int4kv server {} serving on port {} ({}, {})", details.version, server.port(),
               server.tls() ? "TLS" : "plaintext",
               options.auth_token.empty() ? "no auth" : "bearer token required");
  spdlog::info("model {}: {}", info.model_source, info.model.DebugString());
  spdlog::info("backend {} on {}; CPU threads {}", info.device,
               info.device_name.empty() ? "unknown device" : info.device_name,
               options.engine.threads == 0 ? std::string("one per core")
                                           : std::to_string(options.engine.threads));
  spdlog::info("KV cache: {} {} group {} {} params, {} bytes/token, {} token slots ({:.1f} MiB)",
               info.attention,
               info.quant_mode == QuantMode::kSymmetric ? "symmetric" : "asymmetric",
               info.group_size, info.param_dtype == ParamDtype::kFloat16 ? "fp16" : "bf16",
               info.kv_bytes_per_token, info.slots_total, info.kv_pool_bytes / kMiB);
  const KvGpuSizing& sizing = info.kv_gpu_sizing;
  if (sizing.capacity_slots > 0) {
    spdlog::info(
        "KV cache sized as {} of {:.1f} MiB: {:.1f} MiB free after the model, less {:.1f} MiB "
        "of other cache and attention buffers and a {:.1f} MiB reserve for CUDA graphs and "
        "kernels",
        sizing.fraction, sizing.base_bytes / kMiB, sizing.free_bytes / kMiB,
        sizing.other_bytes / kMiB, sizing.reserve_bytes / kMiB);
  }
  spdlog::info(
      "capacity: max_batch {}, max_queue {}, max_seq_len {}, max_new_tokens {}, max_step_tokens "
      "{}",
      info.max_batch, info.max_queue, info.max_seq_len, info.max_new_tokens_limit,
      info.max_step_tokens);
  for (const std::string& warning : LoweredLimitWarnings(
           options.engine, {info.max_seq_len, info.max_new_tokens_limit, info.slots_total})) {
    spdlog::warn("{}", warning);
  }
  spdlog::info("calls: write stall timeout {}, max_rpc_threads {}",
               absl::FormatDuration(service.write_stall_limit),
               options.server.max_threads == 0 ? std::string("no limit")
                                               : std::to_string(options.server.max_threads));
  spdlog::info("CUDA graphs: {}", info.cuda_graphs
                                      ? absl::StrCat("on, batch buckets [",
                                                     absl::StrJoin(info.graph_buckets, ", "), "]")
                                      : std::string("off"));
}

int Run(const char* argv0) {
  // Before any thread starts, ParseOptions's CUDA device query included (the CUDA runtime
  // starts threads of its own, which inherit the mask): only the waits below receive SIGINT
  // and SIGTERM. A signal that comes while the options parse waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<Options> options = ParseOptions(argv0);
  if (!options.ok()) {
    spdlog::error("{}", std::string(options.status().message()));
    return 2;
  }

  ServiceOptions service_options;
  service_options.auth_token = options->auth_token;
  service_options.write_stall_limit = options->write_stall_timeout;
  TokenGenerationService service(service_options);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  absl::StatusOr<std::unique_ptr<GrpcServer>> server =
      GrpcServer::Start(options->server, {{&service, v1::TokenGeneration::service_full_name()}});
  if (!server.ok()) {
    // InvalidArgument: a bad flag value, as ParseOptions's (exit 2); with TLS on, the pair,
    // which gRPC reads only when the port opens. Else the address could not be bound.
    if (absl::IsInvalidArgument(server.status())) {
      const bool tls = !options->server.tls_cert_chain_pem.empty();
      spdlog::error("{}{}",
                    tls ? absl::StrCat("--tls_cert = '", absl::GetFlag(FLAGS_tls_cert),
                                       "', --tls_key = '", absl::GetFlag(FLAGS_tls_key), "': ")
                        : "",
                    std::string(server.status().message()));
      return 2;
    }
    spdlog::error("{}", server.status().ToString());
    return 1;
  }
  spdlog::info("listening on port {}; loading the model (health NOT_SERVING)", (*server)->port());
  if (!options->port_file.empty()) {
    if (absl::Status s = WritePortFile(options->port_file, (*server)->port()); !s.ok()) {
      spdlog::error("{}", std::string(s.message()));
      return 1;
    }
  }

  // The model loads on its own thread, so that a signal meanwhile is acted on at once: a load
  // can take minutes, or wait on a file that never comes.
  absl::StatusOr<std::unique_ptr<Engine>> engine;
  absl::Status flag_error;
  std::atomic<bool> loaded{false};
  std::thread loader([&] {
    engine = CreateEngine(*options, &flag_error);
    loaded.store(true, std::memory_order_release);
  });
  if (const int signal_number = WaitForSignalUntil(signals, loaded); signal_number != 0) {
    spdlog::info("{} while the model loads: stopping (health stays NOT_SERVING)",
                 SignalName(signal_number));
    (*server)->Shutdown(absl::ZeroDuration());
    spdlog::info("server stopped");
    spdlog::shutdown();
    // The loader may be blocked for good (a read that never returns); it cannot be joined
    // or cancelled, so the process ends without running destructors.
    std::_Exit(0);
  }
  loader.join();
  if (!flag_error.ok()) {  // a bad flag, as those ParseOptions finds: exit 2
    spdlog::error("{}", std::string(flag_error.message()));
    (*server)->Shutdown(absl::ZeroDuration());
    return 2;
  }
  if (!engine.ok()) {
    spdlog::error("the engine did not start: {}", engine.status().ToString());
    (*server)->Shutdown(absl::ZeroDuration());
    return 1;
  }
  const EngineInfo info = (*engine)->GetInfo();
  ServerDetails details;
  details.version = kInt4kvVersion;
  service.AttachEngine(engine->get(), details);
  // The summary comes before SERVING, so that a client (or a test) that saw SERVING finds it.
  LogSummary(info, details, *options, service_options, **server);
  (*server)->SetServing(true);
  StopServingOnEngineFailure(**engine, **server);

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  spdlog::info(
      "{}: draining (health NOT_SERVING, new requests UNAVAILABLE); up to {} for {} "
      "running and {} queued requests",
      SignalName(signal_number), absl::FormatDuration(options->drain_timeout),
      (*engine)->GetInfo().running, (*engine)->GetInfo().queued);
  // Refusing first: a client that sees health NOT_SERVING must not get a request in.
  (*engine)->StopAccepting();
  (*server)->SetServing(false);
  const absl::Time drain_start = MonotonicNow();
  // A second SIGINT or SIGTERM during the drain (one with --drain_timeout=inf, say) ends it:
  // what is still queued or running is cancelled, as when the timeout runs out.
  std::atomic<bool> drained{false};
  std::thread second_signal([&] {
    if (const int again = WaitForSignalUntil(signals, drained); again != 0) {
      spdlog::warn("{} again: ending the drain; requests still queued or running end UNAVAILABLE",
                   SignalName(again));
      (*engine)->EndDrain();
    }
  });
  (*engine)->Shutdown(options->drain_timeout);
  drained.store(true, std::memory_order_release);
  second_signal.join();
  spdlog::info("engine stopped after {}", absl::FormatDuration(MonotonicNow() - drain_start));
  // Every request has its finish now and its handler is sending it. gRPC's shutdown closes a
  // connection once its calls are done; a client still starting calls on it then sees the
  // connection reset, and can lose a finish it had not read yet. So the Generate handlers
  // still sending get up to kHandlersReturnLimit to return, and clients kFinishLinger to
  // read, before gRPC closes anything (a handler still running after that is ended by gRPC's
  // shutdown). Clients that keep idle connections open would hold gRPC's shutdown until the
  // grace period ends, so that is short.
  const absl::Time handlers_deadline = MonotonicNow() + kHandlersReturnLimit;
  while (service.generate_calls_in_flight() > 0 && MonotonicNow() < handlers_deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  absl::SleepFor(kFinishLinger);
  (*server)->Shutdown(absl::Milliseconds(500));
  spdlog::info("server stopped");
  return 0;
}

}  // namespace
}  // namespace int4kv

int main(int argc, char** argv) {
  int4kv::HelpListsFlagsOf(__FILE__);
  int4kv::ParseFlagsOnly(
      argc, argv,
      "int4kv gRPC token-generation server. Example: int4kv_server --port=127.0.0.1:50051 "
      "--model=testdata/models/stories260K.bin --backend=cpu");
  const std::string level_name = absl::GetFlag(FLAGS_log_level);
  const spdlog::level::level_enum level = spdlog::level::from_str(level_name);
  if (level == spdlog::level::off && level_name != "off") {
    std::fprintf(stderr,
                 "--log_level = '%s' is invalid: must be trace, debug, info, warn, error or off\n",
                 level_name.c_str());
    return 2;
  }
  spdlog::set_level(level);
  return int4kv::Run(argv[0]);
}
