// The int4kv_server binary as a process: drain on SIGTERM (health SERVING -> NOT_SERVING, new
// requests UNAVAILABLE, running ones finish, or are cancelled after --drain_timeout, exit 0),
// SIGTERM while the model loads (exit 0 at once, never SERVING), server reflection, bearer-token
// auth, TLS with a certificate made at test time, start-up errors, and the int4kv_generate client.
#include <cuda_runtime.h>
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.pb.h"
#include "gtest/gtest.h"
#include "proto/generation.grpc.pb.h"
#include "proto/reflection.grpc.pb.h"
#include "server/engine_device.h"
#include "tests/testing/generate_call.h"
#include "tests/testing/server_process.h"

namespace int4kv {
namespace {

using ::grpc::health::v1::HealthCheckResponse;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kService[] = "int4kv.v1.TokenGeneration";

std::unique_ptr<ServerProcess> StartServing(const std::vector<std::string>& args) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> process = ServerProcess::Start(args);
  EXPECT_TRUE(process.ok()) << process.status();
  if (!process.ok()) return nullptr;
  EXPECT_TRUE(WaitForHealth((*process)->Channel(), HealthCheckResponse::SERVING))
      << (*process)->Log();
  return std::move(*process);
}

TEST(ServerBinaryTest, DrainTurnsHealthNotServingRejectsNewAndFinishesRunning) {
  // One request runs at a time, so the queued one keeps the drain going long enough to look.
  std::unique_ptr<ServerProcess> server = StartServing({"--drain_timeout=60s", "--max_batch=1"});
  ASSERT_NE(server, nullptr);
  auto channel = server->Channel();
  ASSERT_TRUE(WaitForHealth(channel, HealthCheckResponse::SERVING, absl::Seconds(1), kService));
  auto stub = v1::TokenGeneration::NewStub(channel);

  // A long generation is running and another is queued when the signal comes.
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, GreedyRequest({1, 403}, 500));
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  std::vector<int32_t> tokens(response.token_ids().begin(), response.token_ids().end());
  grpc::ClientContext queued_context;
  auto queued = stub->Generate(&queued_context, GreedyRequest({1, 404}, 500));
  ASSERT_TRUE(WaitFor([&] { return GetInfo(*stub).capacity().queued() == 1; }));

  server->Signal(SIGTERM);
  EXPECT_TRUE(WaitForHealth(channel, HealthCheckResponse::NOT_SERVING, absl::Seconds(5)));
  EXPECT_TRUE(WaitForHealth(channel, HealthCheckResponse::NOT_SERVING, absl::Seconds(1), kService));
  const GenerateCall rejected = RunGenerate(*stub, GreedyRequest({1}, 4));
  EXPECT_EQ(rejected.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(rejected.status.error_message(), HasSubstr("shutting down"));
  EXPECT_TRUE(GetInfo(*stub).capacity().draining());

  // Neither the running nor the queued request is cut short.
  while (reader->Read(&response)) {
    tokens.insert(tokens.end(), response.token_ids().begin(), response.token_ids().end());
  }
  const grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(tokens.size(), 500u);
  EXPECT_EQ(response.finish_reason(), v1::FINISH_REASON_LENGTH);
  size_t queued_tokens = 0;
  while (queued->Read(&response)) queued_tokens += response.token_ids_size();
  EXPECT_TRUE(queued->Finish().ok());
  EXPECT_EQ(queued_tokens, 500u);

  EXPECT_EQ(server->Wait(absl::Seconds(20)), 0) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("SIGTERM: draining"));
}

// --drain_timeout=inf waits for every request, and a second signal ends that wait: what is
// still queued or running ends UNAVAILABLE, the rest finished whole, and the process exits 0.
// Sixteen 500-token requests on one batch row are seconds of work, far more than the time
// between the two signals.
TEST(ServerBinaryTest, SecondSignalEndsAnUnlimitedDrain) {
  std::unique_ptr<ServerProcess> server = StartServing({"--drain_timeout=inf", "--max_batch=1"});
  ASSERT_NE(server, nullptr);
  auto stub = v1::TokenGeneration::NewStub(server->Channel());
  std::vector<GenerateCall> calls(16);
  std::vector<std::thread> clients;
  for (size_t i = 0; i < calls.size(); ++i) {
    clients.emplace_back([&, i] {
      calls[i] = RunGenerate(*stub, GreedyRequest({1, static_cast<int32_t>(300 + i)}, 500),
                             absl::Seconds(120));
    });
  }
  EXPECT_TRUE(WaitFor([&] { return GetInfo(*stub).capacity().queued() >= 8; }));
  server->Signal(SIGTERM);
  EXPECT_TRUE(WaitForHealth(server->Channel(), HealthCheckResponse::NOT_SERVING, absl::Seconds(5)));
  server->Signal(SIGTERM);
  EXPECT_EQ(server->Wait(absl::Seconds(30)), 0) << server->Log();
  for (std::thread& client : clients) client.join();
  EXPECT_THAT(server->Log(), HasSubstr("SIGTERM again: ending the drain"));
  int cut = 0;
  for (const GenerateCall& call : calls) {
    if (call.status.ok()) {
      EXPECT_EQ(call.tokens.size(), 500u);
    } else {
      ++cut;
      EXPECT_EQ(call.status.error_code(), grpc::StatusCode::UNAVAILABLE)
          << call.status.error_message();
      EXPECT_LT(call.tokens.size(), 500u);
    }
  }
  EXPECT_GE(cut, 8) << "the second signal did not end the drain early";
}

// The stop signals reach only the server's own waits (server_main.cc), so every thread must
// block them, those that libraries start included: a thread that does not would take a second
// signal during the drain and die of it. The CUDA runtime starts a thread at its first call,
// which the options' device query makes (--backend=auto), so this also checks on a GPU machine
// that the mask comes first.
TEST(ServerBinaryTest, EveryThreadBlocksTheStopSignals) {
  std::unique_ptr<ServerProcess> server = StartServing({"--backend=auto"});
  ASSERT_NE(server, nullptr);
  const std::string tasks = absl::StrCat("/proc/", server->pid(), "/task");
  DIR* dir = opendir(tasks.c_str());
  ASSERT_NE(dir, nullptr) << tasks;
  int threads = 0;
  while (const dirent* entry = readdir(dir)) {
    // The main thread waits in sigwait, during which the kernel shows the signals it waits
    // for as unblocked.
    if (entry->d_name[0] == '.' || std::to_string(server->pid()) == entry->d_name) continue;
    std::ifstream status(absl::StrCat(tasks, "/", entry->d_name, "/status"));
    std::string line, name;
    uint64_t blocked = 0;
    bool found = false;
    while (std::getline(status, line)) {
      if (absl::StartsWith(line, "Name:")) name = line.substr(5);
      if (absl::StartsWith(line, "SigBlk:")) found = absl::SimpleHexAtoi(line.substr(7), &blocked);
    }
    if (!found) continue;  // the thread ended while it was read
    ++threads;
    const uint64_t stop_signals = (uint64_t{1} << (SIGINT - 1)) | (uint64_t{1} << (SIGTERM - 1));
    EXPECT_EQ(blocked & stop_signals, stop_signals) << "thread " << entry->d_name << name;
  }
  closedir(dir);
  EXPECT_GT(threads, 2);
  server->Signal(SIGTERM);
  EXPECT_EQ(server->Wait(absl::Seconds(20)), 0) << server->Log();
}

TEST(ServerBinaryTest, DrainTimeoutCancelsRunningRequestsWithUnavailable) {
  std::unique_ptr<ServerProcess> server = StartServing({"--drain_timeout=0s"});
  ASSERT_NE(server, nullptr);
  auto stub = v1::TokenGeneration::NewStub(server->Channel());
  grpc::ClientContext context;
  auto reader = stub->Generate(&context, GreedyRequest({1}, 500));
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  size_t received = response.token_ids_size();

  server->Signal(SIGINT);
  while (reader->Read(&response)) received += response.token_ids_size();
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("drain timeout"));
  EXPECT_LT(received, 500u);
  EXPECT_EQ(server->Wait(absl::Seconds(20)), 0) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("SIGINT: draining"));
}

// A server whose model load never ends (ServerProcess::StartNeverLoading).
TEST(ServerBinaryTest, SignalWhileTheModelLoadsStopsAtOnceWithoutServing) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::StartNeverLoading(
      std::string(std::getenv("TEST_TMPDIR")) + "/never_written.bin");
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = (*server)->Channel();
  EXPECT_TRUE(WaitForHealth(channel, HealthCheckResponse::NOT_SERVING, absl::Seconds(5)));
  EXPECT_FALSE((*server)->Exited());

  (*server)->Signal(SIGTERM);
  EXPECT_EQ((*server)->Wait(absl::Seconds(20)), 0) << (*server)->Log();
  EXPECT_THAT((*server)->Log(), HasSubstr("SIGTERM while the model loads: stopping"));
  EXPECT_THAT((*server)->Log(), Not(HasSubstr("serving on port")));
}

TEST(ServerBinaryTest, ReflectionListsAndDescribesTheService) {
  std::unique_ptr<ServerProcess> server = StartServing({});
  ASSERT_NE(server, nullptr);
  auto stub = grpc::reflection::v1alpha::ServerReflection::NewStub(server->Channel());
  grpc::ClientContext context;
  auto stream = stub->ServerReflectionInfo(&context);

  grpc::reflection::v1alpha::ServerReflectionRequest request;
  request.set_list_services("");
  ASSERT_TRUE(stream->Write(request));
  grpc::reflection::v1alpha::ServerReflectionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  std::vector<std::string> services;
  for (const auto& service : response.list_services_response().service()) {
    services.push_back(service.name());
  }
  EXPECT_THAT(services, Contains(kService));
  EXPECT_THAT(services, Contains("grpc.health.v1.Health"));

  request.set_file_containing_symbol(kService);
  ASSERT_TRUE(stream->Write(request));
  ASSERT_TRUE(stream->Read(&response));
  ASSERT_GT(response.file_descriptor_response().file_descriptor_proto_size(), 0);
  google::protobuf::FileDescriptorProto file;
  ASSERT_TRUE(file.ParseFromString(response.file_descriptor_response().file_descriptor_proto(0)));
  EXPECT_EQ(file.name(), "proto/generation.proto");
  EXPECT_EQ(file.package(), "int4kv.v1");
  ASSERT_EQ(file.service_size(), 1);
  const google::protobuf::ServiceDescriptorProto& service = file.service(0);
  EXPECT_EQ(service.name(), "TokenGeneration");
  ASSERT_EQ(service.method_size(), 2);
  EXPECT_EQ(service.method(0).name(), "Generate");
  EXPECT_TRUE(service.method(0).server_streaming());
  EXPECT_EQ(service.method(1).name(), "GetServerInfo");
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST(ServerBinaryTest, AuthTokenRejectsMissingAndWrongAndAcceptsTheRightOne) {
  std::unique_ptr<ServerProcess> server = StartServing({"--auth_token=s3cret-token"});
  ASSERT_NE(server, nullptr);  // health answered without a token
  auto stub = v1::TokenGeneration::NewStub(server->Channel());

  const GenerateCall missing = RunGenerate(*stub, GreedyRequest({1}, 4));
  EXPECT_EQ(missing.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(missing.status.error_message(), HasSubstr("missing authorization"));
  const GenerateCall wrong = RunGenerate(*stub, GreedyRequest({1}, 4), absl::Seconds(10), "nope");
  EXPECT_EQ(wrong.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(wrong.status.error_message(), HasSubstr("wrong"));
  EXPECT_TRUE(missing.responses.empty() && wrong.responses.empty());
  {
    grpc::ClientContext context;
    v1::ServerInfo info;
    EXPECT_EQ(stub->GetServerInfo(&context, v1::GetServerInfoRequest(), &info).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }

  const GenerateCall right =
      RunGenerate(*stub, GreedyRequest({1}, 4), absl::Seconds(10), "s3cret-token");
  ASSERT_TRUE(right.status.ok()) << right.status.error_message();
  EXPECT_EQ(right.tokens.size(), 4u);
  EXPECT_EQ(GetInfo(*stub, "s3cret-token").model().vocab_size(), 512);
}

// The same check with the token read from a file (whitespace around it dropped), as a deployment
// that keeps the secret out of the process list starts the server.
TEST(ServerBinaryTest, AuthTokenFromAFile) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/auth_token";
  std::ofstream(path) << "file-token-42\n";
  std::unique_ptr<ServerProcess> server = StartServing({"--auth_token_file=" + path});
  ASSERT_NE(server, nullptr);
  auto stub = v1::TokenGeneration::NewStub(server->Channel());
  const GenerateCall wrong = RunGenerate(*stub, GreedyRequest({1}, 4), absl::Seconds(10), "nope");
  EXPECT_EQ(wrong.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  const GenerateCall right =
      RunGenerate(*stub, GreedyRequest({1}, 4), absl::Seconds(10), "file-token-42");
  ASSERT_TRUE(right.status.ok()) << right.status.error_message();
  EXPECT_EQ(right.tokens.size(), 4u);
  // The client reads its token from the same file.
  std::string output;
  const int code = RunCommand("server/int4kv_generate --server=" + server->address() +
                                  " --prompt_ids=1 --max_new_tokens=3 --auth_token_file=" + path,
                              &output);
  EXPECT_EQ(code, 0) << output;
  EXPECT_THAT(output, HasSubstr("3 generated tokens"));
  EXPECT_EQ(RunCommand("server/int4kv_generate --server=" + server->address() +
                           " --prompt_ids=1 --auth_token=x --auth_token_file=" + path,
                       &output),
            2);
  EXPECT_THAT(output, HasSubstr("--auth_token and --auth_token_file are alternatives"));
}

// A self-signed certificate for localhost and 127.0.0.1, made with openssl in TEST_TMPDIR.
struct TestCertificate {
  std::string cert_path;
  std::string key_path;
  std::string cert_pem;
};

TestCertificate MakeCertificate(const std::string& name) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  TestCertificate cert{dir + "/" + name + ".crt", dir + "/" + name + ".key", ""};
  std::string output;
  const int code = RunCommand(
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
      "-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " +
          cert.key_path + " -out " + cert.cert_path,
      &output);
  EXPECT_EQ(code, 0) << "openssl (scripts/setup.sh installs it) could not make " << name
                     << "'s certificate: " << output;
  std::string pem;
  if (code == 0) RunCommand("cat " + cert.cert_path, &pem);
  cert.cert_pem = pem;  // empty when openssl failed: callers stop there
  return cert;
}

std::shared_ptr<grpc::ChannelCredentials> TrustOnly(const std::string& pem) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = pem;
  return grpc::SslCredentials(options);
}

TEST(ServerBinaryTest, TlsRoundTripWithATestCertificate) {
  const TestCertificate cert = MakeCertificate("server");
  ASSERT_FALSE(cert.cert_pem.empty());
  absl::StatusOr<std::unique_ptr<ServerProcess>> started =
      ServerProcess::Start({"--tls_cert=" + cert.cert_path, "--tls_key=" + cert.key_path});
  ASSERT_TRUE(started.ok()) << started.status();
  ServerProcess& server = **started;
  auto channel = server.Channel(TrustOnly(cert.cert_pem));
  ASSERT_TRUE(WaitForHealth(channel, HealthCheckResponse::SERVING)) << server.Log();

  auto stub = v1::TokenGeneration::NewStub(channel);
  const GenerateCall call = RunGenerate(*stub, GreedyRequest({1, 403, 261}, 6));
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  EXPECT_EQ(call.tokens.size(), 6u);
  EXPECT_EQ(call.last().finish_reason(), v1::FINISH_REASON_LENGTH);

  // Plaintext and a client that trusts another certificate both fail.
  auto plaintext = v1::TokenGeneration::NewStub(server.Channel());
  EXPECT_EQ(RunGenerate(*plaintext, GreedyRequest({1}, 2), absl::Seconds(3)).status.error_code(),
            grpc::StatusCode::UNAVAILABLE);
  const TestCertificate other = MakeCertificate("other");
  ASSERT_FALSE(other.cert_pem.empty());
  auto untrusted = v1::TokenGeneration::NewStub(server.Channel(TrustOnly(other.cert_pem)));
  EXPECT_EQ(RunGenerate(*untrusted, GreedyRequest({1}, 2), absl::Seconds(3)).status.error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST(ServerBinaryTest, BadFlagsFailAtStartNamingTheFlag) {
  for (const auto& [flags, expected] :
       std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--kv_mode=sideways"}, "--kv_mode = 'sideways' is invalid"},
           {{"--backend=tpu"}, "--backend = 'tpu' is invalid"},
           {{"--kv_cache_size=lots"}, "--kv_cache_size = 'lots' is invalid"},
           {{"--model=no/such/model.bin"}, "no readable file no/such/model.bin"},
           {{"--tls_cert=/nonexistent.crt"}, "--tls_cert and --tls_key go together"},
           {{"--auth_token=a", "--auth_token_file=/etc/hostname"},
            "--auth_token and --auth_token_file are alternatives: set one of them"},
           {{"--write_stall_timeout=0s"},
            "--write_stall_timeout = 0 is invalid: must be > 0 (inf: never)"},
           {{"--max_rpc_threads=1"},
            "--max_rpc_threads = 1 is invalid: must be 0 (no limit) or >= 2"},
           // The engine's own limits, checked before the port opens and the model loads.
           {{"--max_batch=0"}, "--max_batch = 0 is invalid: must be in [1, 4096]"},
           {{"--max_queue=-1"}, "--max_queue = -1 is invalid: must be in [1, 1048576]"},
           {{"--max_seq_len=1"},
            "--max_seq_len = 1 is invalid: must be 0 (the model's) or in [2, "},
           {{"--kv_group_size=12"},
            "--kv_group_size = 12 is invalid: must be one of 8, 16, 32, 64, 128"},
           {{"--threads=-2"}, "--threads = -2 is invalid"},
           {{"--backend=cpu", "--kv_cache_size=0.5"},
            "--kv_cache_size = 0.5 is a fraction of GPU memory, which needs --backend=cuda, but "
            "the backend is cpu: give --kv_cache_size in bytes"}}) {
    const std::string name = absl::StrJoin(flags, " ");
    const absl::StatusOr<std::unique_ptr<ServerProcess>> process = ServerProcess::Start(flags);
    ASSERT_FALSE(process.ok()) << name << ": the port opened";
    EXPECT_THAT(process.status().message(), HasSubstr("exited with 2")) << name;
    EXPECT_THAT(process.status().message(), HasSubstr(expected)) << name;
    EXPECT_THAT(process.status().message(), Not(HasSubstr("EngineConfig"))) << name;
  }
}

// The cuda backend's own flags do nothing on cpu; a server that ignores them says so.
TEST(ServerBinaryTest, CudaFlagsOnTheCpuBackendAreReportedAsIgnored) {
  std::unique_ptr<ServerProcess> server =
      StartServing({"--backend=cpu", "--cuda_dtype=bf16", "--cuda_graphs=false"});
  ASSERT_NE(server, nullptr);
  server->Signal(SIGTERM);
  EXPECT_EQ(server->Wait(absl::Seconds(20)), 0) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("--cuda_dtype and --cuda_graphs apply to the cuda backend "
                                       "only; the backend is cpu, so they are ignored"));
}

// TLS is taken from the PEM files' contents, so an empty one (a secret not mounted yet) or a
// directory must stop the start, naming the flag, rather than start a plaintext server.
TEST(ServerBinaryTest, EmptyOrDirectoryTlsFilesFailAtStart) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  const TestCertificate cert = MakeCertificate("good");
  ASSERT_FALSE(cert.cert_pem.empty());
  std::ofstream(dir + "/empty.pem").flush();
  for (const auto& [flags, expected] :
       std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--tls_cert=" + dir + "/empty.pem", "--tls_key=" + dir + "/empty.pem"},
            "--tls_cert = '" + dir + "/empty.pem' is empty"},
           {{"--tls_cert=" + cert.cert_path, "--tls_key=" + dir + "/empty.pem"},
            "--tls_key = '" + dir + "/empty.pem' is empty"},
           {{"--tls_cert=" + dir, "--tls_key=" + cert.key_path},
            "--tls_cert = '" + dir + "': " + dir + " is a directory, not a file"},
           {{"--tls_cert=/nonexistent.crt", "--tls_key=" + cert.key_path},
            "--tls_cert = '/nonexistent.crt': no readable file at /nonexistent.crt"}}) {
    const std::string name = absl::StrJoin(flags, " ");
    const absl::StatusOr<std::unique_ptr<ServerProcess>> process = ServerProcess::Start(flags);
    ASSERT_FALSE(process.ok()) << name << ": the port opened";
    EXPECT_THAT(process.status().message(), HasSubstr("exited with 2")) << name;
    EXPECT_THAT(process.status().message(), HasSubstr(expected)) << name;
  }
}

// Files that hold no PEM block of their kind (whitespace, text, the key and certificate
// swapped) are named by flag, and a pair whose blocks gRPC cannot load (a corrupt body, a key
// that is not the certificate's) is reported as the TLS pair, not as a port that cannot be
// bound: each exits 2 without serving.
TEST(ServerBinaryTest, TlsFilesGrpcCannotLoadFailAtStartNamingTheFlags) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  const TestCertificate cert = MakeCertificate("pair_a");
  const TestCertificate other = MakeCertificate("pair_b");
  ASSERT_FALSE(cert.cert_pem.empty());
  ASSERT_FALSE(other.cert_pem.empty());
  std::ofstream(dir + "/newline.pem") << "\n";
  std::ofstream(dir + "/text.pem") << "not a pem\n";
  std::ofstream(dir + "/corrupt.crt") << "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n"
                                      << "-----END CERTIFICATE-----\n";
  const std::string refused = "gRPC refused the TLS certificate chain and private key";
  for (const auto& [flags, expected] :
       std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--tls_cert=" + dir + "/newline.pem", "--tls_key=" + cert.key_path},
            "--tls_cert = '" + dir + "/newline.pem' holds no PEM CERTIFICATE block"},
           {{"--tls_cert=" + cert.cert_path, "--tls_key=" + dir + "/text.pem"},
            "--tls_key = '" + dir + "/text.pem' holds no PEM PRIVATE KEY block"},
           {{"--tls_cert=" + cert.key_path, "--tls_key=" + cert.cert_path},
            "--tls_cert = '" + cert.key_path + "' holds no PEM CERTIFICATE block"},
           {{"--tls_cert=" + dir + "/corrupt.crt", "--tls_key=" + cert.key_path}, refused},
           {{"--tls_cert=" + cert.cert_path, "--tls_key=" + other.key_path}, refused}}) {
    const std::string name = absl::StrJoin(flags, " ");
    const absl::StatusOr<std::unique_ptr<ServerProcess>> process = ServerProcess::Start(flags);
    ASSERT_FALSE(process.ok()) << name << ": the server started";
    EXPECT_THAT(process.status().message(), HasSubstr("exited with 2")) << name;
    EXPECT_THAT(process.status().message(), HasSubstr(expected)) << name;
    EXPECT_THAT(process.status().message(), Not(HasSubstr("could not listen"))) << name;
  }
}

// The client's file flags name themselves when their file is missing, before any call.
TEST(ServerBinaryTest, GenerateClientNamesAMissingRootCertificate) {
  std::string output;
  EXPECT_EQ(RunCommand("server/int4kv_generate --server=127.0.0.1:1 --prompt_ids=1 "
                       "--tls_root_cert=/nonexistent.pem",
                       &output),
            2);
  EXPECT_THAT(
      output,
      HasSubstr("--tls_root_cert = '/nonexistent.pem': no readable file at /nonexistent.pem"));
}

// A checkpoint named without '/' or ".bin" is loaded when the file exists (it was taken for a
// preset name before); a name that is neither says so for both readings.
TEST(ServerBinaryTest, ModelNamedLikeAPresetIsLoadedWhenTheFileExists) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  ASSERT_EQ(std::system(("cp testdata/models/stories260K.bin " + dir + "/model.ckpt").c_str()), 0);
  setenv("BUILD_WORKING_DIRECTORY", dir.c_str(), 1);  // where relative --model paths start
  std::unique_ptr<ServerProcess> server = StartServing({"--model=model.ckpt"});
  const absl::StatusOr<std::unique_ptr<ServerProcess>> missing =
      ServerProcess::Start({"--model=other.ckpt"});
  unsetenv("BUILD_WORKING_DIRECTORY");
  ASSERT_NE(server, nullptr);
  auto stub = v1::TokenGeneration::NewStub(server->Channel());
  const v1::ServerInfo info = GetInfo(*stub);
  EXPECT_EQ(info.model().source(), "model.ckpt");
  EXPECT_EQ(info.model().vocab_size(), 512);

  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("exited with 2"));
  EXPECT_THAT(missing.status().message(),
              HasSubstr("--model = 'other.ckpt' is neither a checkpoint file (no readable file "
                        "other.ckpt; tried "));
  EXPECT_THAT(missing.status().message(),
              HasSubstr("nor a preset (unknown model preset 'other.ckpt'"));
}

// Flags that only the loaded model can refute: the port is open by then, but the error still
// names the flag and the exit status is that of a bad flag.
TEST(ServerBinaryTest, FlagsThatDoNotFitTheModelFailOnceItLoadsNamingTheFlag) {
  for (const auto& [flag, expected] : std::vector<std::pair<std::string, std::string>>{
           {"--max_new_tokens=600",
            "--max_new_tokens = 600 is invalid: must be 0 (max_seq_len - 1) or in [1, 511]"},
           {"--max_seq_len=1000",
            "--max_seq_len = 1000 is invalid: must be 0 (the model's) or in [2, 512]"},
           {"--kv_group_size=16",
            "--kv_group_size = 16 is invalid: must be a divisor of the model's head_dim (8)"},
           {"--kv_cache_size=700",
            "--kv_cache_size = 700 bytes holds fewer than the 2 token slots a request needs: "
            "240 bytes"}}) {
    absl::StatusOr<std::unique_ptr<ServerProcess>> process = ServerProcess::Start({flag});
    ASSERT_TRUE(process.ok()) << flag << ": " << process.status();
    EXPECT_EQ((*process)->Wait(absl::Seconds(20)), 2) << flag;
    EXPECT_THAT((*process)->Log(), HasSubstr(expected)) << flag;
    EXPECT_THAT((*process)->Log(), Not(HasSubstr("EngineConfig"))) << flag;
  }
}

TEST(ServerBinaryTest, KvCacheSizeInBytesAndTheEnginesDeviceAreReportedAndLogged) {
  std::unique_ptr<ServerProcess> server =
      StartServing({"--backend=cpu", "--kv_cache_size=1MiB", "--cuda_graphs=true"});
  ASSERT_NE(server, nullptr);
  auto stub = v1::TokenGeneration::NewStub(server->Channel());
  const v1::ServerInfo info = GetInfo(*stub);
  EXPECT_EQ(info.capacity().slots_total(), (1 << 20) / 240 - 1);  // 240 bytes a token
  EXPECT_EQ(info.kv_cache().pool_bytes(), ((1 << 20) / 240) * 240);
  EXPECT_EQ(info.backend().backend(), "cpu");
  EXPECT_EQ(info.backend().device_name(), CpuModelName());
  EXPECT_FALSE(info.backend().cuda_graphs());
  EXPECT_TRUE(info.backend().graph_buckets().empty());
  // The summary is logged just after health turns SERVING.
  EXPECT_TRUE(WaitFor([&] { return absl::StrContains(server->Log(), "CUDA graphs: off"); }))
      << server->Log();
  if (!CpuModelName().empty()) {
    EXPECT_THAT(server->Log(), HasSubstr("backend cpu on " + CpuModelName()));
  }
}

// Limits set above what a small KV cache lets a request reach are served lowered, and the
// start-up log says so, naming each flag.
TEST(ServerBinaryTest, LimitsTheKvCacheLowersAreLoggedNamingTheFlags) {
  std::unique_ptr<ServerProcess> server = StartServing(
      {"--backend=cpu", "--kv_cache_size=24000", "--max_seq_len=400", "--max_new_tokens=300"});
  ASSERT_NE(server, nullptr);
  auto stub = v1::TokenGeneration::NewStub(server->Channel());
  const v1::ServerInfo info = GetInfo(*stub);
  EXPECT_EQ(info.capacity().slots_total(), 24000 / 240 - 1);
  EXPECT_EQ(info.capacity().max_seq_len(), 99);
  EXPECT_EQ(info.capacity().max_new_tokens(), 98);
  EXPECT_TRUE(WaitFor([&] {
    return absl::StrContains(server->Log(), "--max_new_tokens = 300 is lowered to 98");
  })) << server->Log();
  EXPECT_THAT(server->Log(), HasSubstr("--max_seq_len = 400 is lowered to 99"));
}

// Device 0's compute capability major version; 0 if it cannot be read.
int CudaComputeCapabilityMajor() {
  int major = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess) return 0;
  return major;
}

TEST(ServerBinaryTest, CudaBackendEitherServesOnCudaOrFailsAtStartSayingWhy) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> process = ServerProcess::Start({"--backend=cuda"});
  if (CudaDeviceName().empty()) {  // no GPU: a bad flag, refused before the port opens
    ASSERT_FALSE(process.ok()) << "the port opened";
    EXPECT_THAT(process.status().message(), HasSubstr("exited with 2"));
    EXPECT_THAT(process.status().message(),
                HasSubstr("--backend = 'cuda' needs a CUDA device, and none is visible"));
    return;
  }
  ASSERT_TRUE(process.ok()) << process.status();
  auto channel = (*process)->Channel();
  auto stub = v1::TokenGeneration::NewStub(channel);
  bool serving = false;
  ASSERT_TRUE(WaitFor(
      [&] {
        serving = WaitForHealth(channel, HealthCheckResponse::SERVING, absl::Milliseconds(20));
        return serving || (*process)->Exited();
      },
      absl::Seconds(30)))
      << (*process)->Log();
  if (serving) {
    const v1::ServerInfo info = GetInfo(*stub);
    EXPECT_EQ(info.backend().backend(), "cuda");  // an engine with a CUDA path
    EXPECT_EQ(info.backend().device_name(), CudaDeviceName());
    EXPECT_FALSE(info.backend().device_name().empty());
    EXPECT_TRUE(info.backend().cuda_graphs());
    EXPECT_THAT(info.backend().graph_buckets(), ElementsAre(1, 2, 4, 8));  // max_batch 8
    EXPECT_TRUE(WaitFor([&] {
      return absl::StrContains((*process)->Log(), "CUDA graphs: on, batch buckets [1, 2, 4, 8]");
    })) << (*process)->Log();
    return;
  }
  // Only a device older than the kernels' code (Hopper, compute capability 9.0) may refuse;
  // on any other, a start-up failure is a defect, not a device that cannot run the engine.
  EXPECT_LT(CudaComputeCapabilityMajor(), 9) << "the server did not serve: " << (*process)->Log();
  EXPECT_EQ((*process)->Wait(absl::Seconds(1)), 1);
  EXPECT_THAT((*process)->Log(), HasSubstr("the engine did not start"));
}

TEST(ServerBinaryTest, GenerateClientStreamsTokensAndPrintsFinishAndTimings) {
  std::unique_ptr<ServerProcess> server = StartServing({});
  ASSERT_NE(server, nullptr);
  auto stub = v1::TokenGeneration::NewStub(server->Channel());
  const GenerateCall reference = RunGenerate(*stub, GreedyRequest({1, 403, 261}, 12));
  ASSERT_TRUE(reference.status.ok());

  std::string output;
  const int code = RunCommand("server/int4kv_generate --server=" + server->address() +
                                  " --prompt_ids=1,403,261 --max_new_tokens=12 --ignore_eos",
                              &output);
  ASSERT_EQ(code, 0) << output;
  std::string expected_tokens = "tokens:";
  for (int32_t id : reference.tokens) expected_tokens += " " + std::to_string(id);
  EXPECT_THAT(output, HasSubstr(expected_tokens + "\n"));
  EXPECT_THAT(output, HasSubstr("finish: length"));
  EXPECT_THAT(output, HasSubstr("3 prompt tokens, 12 generated tokens"));
  EXPECT_THAT(output, HasSubstr("time to first token"));

  const int bad = RunCommand("server/int4kv_generate --server=" + server->address() +
                                 " --prompt_ids=1,600 --max_new_tokens=4",
                             &output);
  EXPECT_EQ(bad, 2) << "a request the server refuses as invalid is a bad flag value";
  EXPECT_THAT(output, HasSubstr("INVALID_ARGUMENT: prompt[1] = 600"));
  EXPECT_EQ(RunCommand("server/int4kv_generate --server=" + server->address() +
                           " --prompt_ids=1 --temperature=-1",
                       &output),
            2);
  EXPECT_THAT(output, HasSubstr("temperature"));
  // A word that is not a flag: `--ignore_eos false` would otherwise run with ignore_eos true.
  EXPECT_EQ(RunCommand("server/int4kv_generate --server=" + server->address() +
                           " --prompt_ids=1 --ignore_eos false",
                       &output),
            2);
  EXPECT_THAT(output, HasSubstr("unexpected argument 'false'"));

  // No deadline at all; a deadline that has passed before the call is a bad flag.
  ASSERT_EQ(
      RunCommand("server/int4kv_generate --server=" + server->address() +
                     " --prompt_ids=1,403,261 --max_new_tokens=12 --ignore_eos --deadline=inf",
                 &output),
      0)
      << output;
  EXPECT_THAT(output, HasSubstr(expected_tokens + "\n"));
  EXPECT_EQ(RunCommand("server/int4kv_generate --server=" + server->address() +
                           " --prompt_ids=1 --deadline=-1s",
                       &output),
            2);
  EXPECT_THAT(output, HasSubstr("--deadline = -1s is invalid: must be > 0"));
  // Flags that would otherwise be dropped without a word.
  EXPECT_EQ(RunCommand("server/int4kv_generate --server=" + server->address() +
                           " --prompt_ids=1 --wait_for_serving=-5s",
                       &output),
            2);
  EXPECT_THAT(output, HasSubstr("--wait_for_serving = -5s is invalid: must be >= 0"));
  EXPECT_EQ(RunCommand("server/int4kv_generate --server=" + server->address() +
                           " --prompt_ids=1 --tls_server_name=int4kv.test",
                       &output),
            2);
  EXPECT_THAT(output, HasSubstr("--tls_server_name is set but TLS is off"));
}

}  // namespace
}  // namespace int4kv
