// int4kv_generate: a command-line client of the int4kv server. Sends one Generate request,
// prints the token ids as they arrive, then the finish reason and the timings.
//
//   bazel run //server:int4kv_generate -- --server=127.0.0.1:50051 --prompt_ids=1,2,3
//   bazel run //server:int4kv_generate -- --server=127.0.0.1:50051 --info
//
// Exit status: 0 on a normal finish; 2 for bad flag values, found here or by the server (its
// INVALID_ARGUMENT: a token id past the vocabulary, a temperature out of range), and for a
// word that is not a flag; 1 on any other RPC error (printed as CODE: message), and for an
// unknown flag or one whose value does not parse (Abseil's parser exits 1 itself).
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/help_flags.h"
#include "common/monotonic_time.h"
#include "common/parse_flags.h"
#include "proto/generation.grpc.pb.h"
#include "proto/health.grpc.pb.h"
#include "server/grpc_convert.h"
#include "server/server_main_options.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "HOST:PORT of the server");
ABSL_FLAG(std::string, prompt_ids, "", "comma-separated prompt token ids, e.g. 1,2,3");
ABSL_FLAG(int32_t, max_new_tokens, 32, "tokens to generate, at most");
ABSL_FLAG(float, temperature, 0.0f, "softmax temperature; 0: greedy");
ABSL_FLAG(int32_t, top_k, 0, "keep the k most likely tokens; 0: no limit");
ABSL_FLAG(float, top_p, 1.0f, "nucleus sampling mass, in (0, 1]");
ABSL_FLAG(std::optional<uint64_t>, seed, std::nullopt, "sampling seed; unset: the server picks");
ABSL_FLAG(std::string, stop_ids, "", "comma-separated stop token ids");
ABSL_FLAG(bool, ignore_eos, false, "keep generating after the model's EOS token");
ABSL_FLAG(std::string, request_id, "", "an id of your choosing, echoed by the server");
ABSL_FLAG(absl::Duration, deadline, absl::Seconds(60), "deadline of the call; inf for none");
ABSL_FLAG(bool, tls, false, "use TLS with the system's root certificates");
ABSL_FLAG(std::string, tls_root_cert, "",
          "PEM root certificate(s) to verify the server with (implies --tls)");
ABSL_FLAG(std::string, tls_server_name, "",
          "TLS: the name to verify the server's certificate against, if not the host of --server "
          "(needs --tls or --tls_root_cert)");
ABSL_FLAG(std::string, auth_token, "", "bearer token, sent as \"authorization: Bearer <token>\"");
ABSL_FLAG(std::string, auth_token_file, "",
          "--auth_token read from this file (whitespace around it dropped)");
ABSL_FLAG(absl::Duration, wait_for_serving, absl::ZeroDuration(),
          "first wait up to this long for the server's health to be SERVING (0: don't wait)");
ABSL_FLAG(bool, info, false, "print the server's GetServerInfo and exit");

namespace int4kv {
namespace {

absl::StatusOr<std::vector<int32_t>> ParseIds(absl::string_view flag, absl::string_view text) {
  std::vector<int32_t> ids;
  if (absl::StripAsciiWhitespace(text).empty()) return ids;
  for (absl::string_view piece : absl::StrSplit(text, ',')) {
    int32_t id;
    if (!absl::SimpleAtoi(piece, &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", piece, "' is not a token id"));
    }
    ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const char* argv0) {
  const std::string root_cert_flag = absl::GetFlag(FLAGS_tls_root_cert);
  const bool tls = absl::GetFlag(FLAGS_tls) || !root_cert_flag.empty();
  if (!tls && !absl::GetFlag(FLAGS_tls_server_name).empty()) {
    return absl::InvalidArgumentError(
        "--tls_server_name is set but TLS is off: add --tls or --tls_root_cert, or drop it");
  }
  grpc::ChannelArguments arguments;
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (tls) {
    grpc::SslCredentialsOptions ssl;
    if (!root_cert_flag.empty()) {
      absl::StatusOr<std::string> path = FindFlagFile("--tls_root_cert", root_cert_flag, argv0);
      if (!path.ok()) return path.status();
      absl::StatusOr<std::string> pem = ReadInputFile(*path, "--tls_root_cert");
      if (!pem.ok()) return pem.status();
      ssl.pem_root_certs = *pem;
    }
    credentials = grpc::SslCredentials(ssl);
    const std::string server_name = absl::GetFlag(FLAGS_tls_server_name);
    if (!server_name.empty()) arguments.SetSslTargetNameOverride(server_name);
  }
  return grpc::CreateCustomChannel(absl::GetFlag(FLAGS_server), credentials, arguments);
}

// `token`: the bearer token, empty for none.
void PrepareContext(const std::string& token, grpc::ClientContext* context) {
  // absl::Time saturates, so an infinite deadline stays infinite (now() + inf would overflow).
  context->set_deadline(absl::ToChronoTime(absl::Now() + absl::GetFlag(FLAGS_deadline)));
  if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
}

// The exit status of a failed call: 2 when the server refused the request the flags describe.
int Fail(const grpc::Status& status) {
  std::fprintf(stderr, "error: %s: %s\n",
               absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())).c_str(),
               status.error_message().c_str());
  return status.error_code() == grpc::StatusCode::INVALID_ARGUMENT ? 2 : 1;
}

// Polls the server's health until SERVING or `timeout`.
bool WaitForServing(const std::shared_ptr<grpc::Channel>& channel, absl::Duration timeout) {
  auto health = grpc::health::v1::Health::NewStub(channel);
  const absl::Time end = MonotonicNow() + timeout;
  while (true) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status status = health->Check(&context, request, &response);
    if (status.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
      return true;
    }
    if (MonotonicNow() >= end) {
      std::fprintf(
          stderr, "error: the server at %s was not SERVING within %s (%s)\n",
          absl::GetFlag(FLAGS_server).c_str(), absl::FormatDuration(timeout).c_str(),
          status.ok()
              ? grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()).c_str()
              : status.error_message().c_str());
      return false;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
}

absl::StatusOr<v1::GenerateRequest> BuildRequest() {
  v1::GenerateRequest request;
  absl::StatusOr<std::vector<int32_t>> prompt =
      ParseIds("prompt_ids", absl::GetFlag(FLAGS_prompt_ids));
  if (!prompt.ok()) return prompt.status();
  if (prompt->empty()) return absl::InvalidArgumentError("--prompt_ids is required, e.g. 1,2,3");
  absl::StatusOr<std::vector<int32_t>> stop = ParseIds("stop_ids", absl::GetFlag(FLAGS_stop_ids));
  if (!stop.ok()) return stop.status();
  for (int32_t id : *prompt) request.add_prompt(id);
  request.set_max_new_tokens(absl::GetFlag(FLAGS_max_new_tokens));
  // Checked here as the server would, so that an id it refuses is named as the flag (one that
  // is not UTF-8 would not even reach the service: protobuf refuses it first, with no message).
  const std::string request_id = absl::GetFlag(FLAGS_request_id);
  if (absl::Status id = ValidateRequestId(request_id); !id.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--", id.message()));
  }
  request.set_request_id(request_id);
  v1::SamplingParams* sampling = request.mutable_sampling();
  sampling->set_temperature(absl::GetFlag(FLAGS_temperature));
  sampling->set_top_k(absl::GetFlag(FLAGS_top_k));
  sampling->set_top_p(absl::GetFlag(FLAGS_top_p));
  if (const std::optional<uint64_t> seed = absl::GetFlag(FLAGS_seed); seed.has_value()) {
    sampling->set_seed(*seed);
  }
  for (int32_t id : *stop) sampling->add_stop_token_ids(id);
  sampling->set_ignore_eos(absl::GetFlag(FLAGS_ignore_eos));
  return request;
}

const char* FinishName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_LENGTH:
      return "length (max_new_tokens reached)";
    case v1::FINISH_REASON_STOP:
      return "stop (a stop token)";
    case v1::FINISH_REASON_EOS:
      return "eos (end of sequence)";
    default:
      return "unspecified";
  }
}

int Run(const char* argv0) {
  if (absl::GetFlag(FLAGS_deadline) <= absl::ZeroDuration()) {
    std::fprintf(stderr, "--deadline = %s is invalid: must be > 0 (inf for none)\n",
                 absl::FormatDuration(absl::GetFlag(FLAGS_deadline)).c_str());
    return 2;
  }
  if (absl::GetFlag(FLAGS_wait_for_serving) < absl::ZeroDuration()) {
    std::fprintf(stderr, "--wait_for_serving = %s is invalid: must be >= 0 (0: don't wait)\n",
                 absl::FormatDuration(absl::GetFlag(FLAGS_wait_for_serving)).c_str());
    return 2;
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(argv0);
  if (!channel.ok()) {
    std::fprintf(stderr, "%s\n", std::string(channel.status().message()).c_str());
    return 2;
  }
  const absl::StatusOr<std::string> token = ResolveAuthToken(
      absl::GetFlag(FLAGS_auth_token), absl::GetFlag(FLAGS_auth_token_file), argv0);
  if (!token.ok()) {
    std::fprintf(stderr, "%s\n", std::string(token.status().message()).c_str());
    return 2;
  }
  const absl::Duration wait = absl::GetFlag(FLAGS_wait_for_serving);
  if (wait > absl::ZeroDuration() && !WaitForServing(*channel, wait)) return 1;
  auto stub = v1::TokenGeneration::NewStub(*channel);

  if (absl::GetFlag(FLAGS_info)) {
    grpc::ClientContext context;
    PrepareContext(*token, &context);
    v1::ServerInfo info;
    const grpc::Status status = stub->GetServerInfo(&context, v1::GetServerInfoRequest(), &info);
    if (!status.ok()) return Fail(status);
    std::printf("%s", info.DebugString().c_str());
    return 0;
  }

  absl::StatusOr<v1::GenerateRequest> request = BuildRequest();
  if (!request.ok()) {
    std::fprintf(stderr, "%s\n", std::string(request.status().message()).c_str());
    return 2;
  }
  grpc::ClientContext context;
  PrepareContext(*token, &context);
  const absl::Time start = MonotonicNow();
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub->Generate(&context, *request);
  v1::GenerateResponse response;
  v1::GenerateResponse last;
  int messages = 0;
  absl::Duration first_token = absl::ZeroDuration();
  while (reader->Read(&response)) {
    if (messages++ == 0) std::printf("tokens:");
    if (response.token_ids_size() > 0 && first_token == absl::ZeroDuration()) {
      first_token = MonotonicNow() - start;
    }
    for (int32_t id : response.token_ids()) std::printf(" %d", id);
    std::fflush(stdout);
    last = response;
  }
  if (messages > 0) std::printf("\n");
  const grpc::Status status = reader->Finish();
  const absl::Duration elapsed = MonotonicNow() - start;
  if (!status.ok()) return Fail(status);
  const v1::Usage& usage = last.usage();
  std::printf("finish: %s\n", FinishName(last.finish_reason()));
  std::printf("usage: %d prompt tokens, %d generated tokens in %d messages\n",
              usage.prompt_tokens(), usage.generated_tokens(), messages);
  std::printf("server: time to first token %.2f ms, total %.2f ms\n",
              usage.time_to_first_token_us() / 1000.0, usage.total_time_us() / 1000.0);
  std::printf("client: time to first token %.2f ms, total %.2f ms\n",
              absl::ToDoubleMilliseconds(first_token), absl::ToDoubleMilliseconds(elapsed));
  return 0;
}

}  // namespace
}  // namespace int4kv

int main(int argc, char** argv) {
  int4kv::HelpListsFlagsOf(__FILE__);
  int4kv::ParseFlagsOnly(argc, argv,
                         "Streams one generation from an int4kv server. Example: int4kv_generate "
                         "--server=127.0.0.1:50051 --prompt_ids=1,2,3 --max_new_tokens=16");
  return int4kv::Run(argv[0]);
}
