#include "server/server_main_options.h"

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;

TEST(ParseKvCacheSizeTest, EmptyMeansDefault) {
  const absl::StatusOr<KvCacheSize> size = ParseKvCacheSize("");
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(size->bytes, 0);
  EXPECT_EQ(size->gpu_fraction, 0.0);
}

TEST(ParseKvCacheSizeTest, ByteCountsWithUnits) {
  const std::pair<const char*, int64_t> cases[] = {
      {"268435456", 268435456},
      {"256MiB", 256ll << 20},
      {"256M", 256ll << 20},
      {"1.5GiB", 3ll << 29},
      {"300MB", 300000000},
      {"2kb", 2000},
      {"7B", 7},
      {"1T", 1ll << 40},
      {" 64 KiB ", 64 << 10},
      // One letter is binary, with B decimal, with iB binary.
      {"4K", 4ll << 10},
      {"1G", 1ll << 30},
      {"2GB", 2000000000},
      {"1TB", 1000000000000},
  };
  for (const auto& [text, bytes] : cases) {
    const absl::StatusOr<KvCacheSize> size = ParseKvCacheSize(text);
    ASSERT_TRUE(size.ok()) << text << ": " << size.status();
    EXPECT_EQ(size->bytes, bytes) << text;
    EXPECT_EQ(size->gpu_fraction, 0.0) << text;
  }
}

TEST(ParseKvCacheSizeTest, DecimalWithoutUnitIsAFractionOfGpuMemory) {
  absl::StatusOr<KvCacheSize> size = ParseKvCacheSize("0.9");
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(size->bytes, 0);
  EXPECT_DOUBLE_EQ(size->gpu_fraction, 0.9);
  size = ParseKvCacheSize("1.0");
  ASSERT_TRUE(size.ok());
  EXPECT_DOUBLE_EQ(size->gpu_fraction, 1.0);
}

TEST(ParseKvCacheSizeTest, RejectsNamingTheFlagAndTheForms) {
  for (const char* text : {"abc", "0.0", "1.5", "12XB", "-5", "0", "MiB", "0.5.1", "1e9"}) {
    const absl::StatusOr<KvCacheSize> size = ParseKvCacheSize(text);
    ASSERT_FALSE(size.ok()) << text;
    EXPECT_EQ(size.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(size.status().message(), HasSubstr("--kv_cache_size")) << text;
  }
}

TEST(ParseEnumsTest, KvModeDtypeAndBackend) {
  EXPECT_EQ(*ParseKvMode("symmetric"), QuantMode::kSymmetric);
  EXPECT_EQ(*ParseKvMode("asymmetric"), QuantMode::kAsymmetric);
  EXPECT_THAT(ParseKvMode("sym").status().message(), HasSubstr("symmetric or asymmetric"));
  EXPECT_EQ(*ParseKvParamDtype("fp16"), ParamDtype::kFloat16);
  EXPECT_EQ(*ParseKvParamDtype("bf16"), ParamDtype::kBFloat16);
  EXPECT_THAT(ParseKvParamDtype("fp32").status().message(), HasSubstr("fp16 or bf16"));
  EXPECT_EQ(*ParseBackend("auto"), "auto");
  EXPECT_EQ(*ParseBackend("cpu"), "cpu");
  EXPECT_EQ(*ParseBackend("cuda"), "cuda");
  EXPECT_THAT(ParseBackend("gpu").status().message(), HasSubstr("auto, cpu or cuda"));
  EXPECT_EQ(*ParseCudaDtype("fp16"), DType::kFloat16);
  EXPECT_EQ(*ParseCudaDtype("bf16"), DType::kBFloat16);
  EXPECT_THAT(ParseCudaDtype("fp32").status().message(), HasSubstr("--cuda_dtype"));
}

TEST(ParseListenAddressTest, HostPortAndBarePort) {
  EXPECT_EQ(*ParseListenAddress("127.0.0.1:50051"), "127.0.0.1:50051");
  EXPECT_EQ(*ParseListenAddress("0.0.0.0:0"), "0.0.0.0:0");
  EXPECT_EQ(*ParseListenAddress("[::1]:8080"), "[::1]:8080");
  EXPECT_EQ(*ParseListenAddress("9000"), "127.0.0.1:9000");
  EXPECT_EQ(*ParseListenAddress("[::]:0"), "[::]:0");
  EXPECT_EQ(*ParseListenAddress("host:65535"), "host:65535");
  for (const char* text : {"", "host:", "host:x", "host:70000", "host:65536", ":80", "host:-1"}) {
    const absl::StatusOr<std::string> address = ParseListenAddress(text);
    ASSERT_FALSE(address.ok()) << text;
    EXPECT_THAT(address.status().message(), HasSubstr("--port")) << text;
  }
  // Unbracketed IPv6: "::1" would be host ":" and port 1, and gRPC would listen on 443.
  for (const char* text : {"::1", "::1:50051", "fe80::1:8080"}) {
    const absl::StatusOr<std::string> address = ParseListenAddress(text);
    ASSERT_FALSE(address.ok()) << text;
    EXPECT_THAT(address.status().message(), HasSubstr("an IPv6 host must be in brackets"))
        << text;
  }
}

TEST(FindInputFileTest, PrefersTheBazelRunDirectoryThenTheWorkingDirectory) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  std::ofstream(dir + "/user.txt") << "x";
  setenv("BUILD_WORKING_DIRECTORY", dir.c_str(), 1);
  absl::StatusOr<std::string> found = FindInputFile("user.txt", "", false);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, dir + "/user.txt");
  // The model is a data dependency of this test: found relative to the working directory.
  found = FindInputFile("testdata/models/stories260K.bin", "", false);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, "testdata/models/stories260K.bin");
  unsetenv("BUILD_WORKING_DIRECTORY");
}

TEST(FindInputFileTest, SearchesRunfilesOnlyWhenAsked) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  const std::string runfiles = dir + "/fake.runfiles";
  ASSERT_EQ(system(("mkdir -p " + runfiles + "/int4kv/sub").c_str()), 0);
  std::ofstream(runfiles + "/int4kv/sub/data.bin") << "x";
  const std::string argv0 = dir + "/fake";
  EXPECT_EQ(FindInputFile("sub/data.bin", argv0, false).status().code(),
            absl::StatusCode::kNotFound);
  const absl::StatusOr<std::string> found = FindInputFile("sub/data.bin", argv0, true);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, runfiles + "/int4kv/sub/data.bin");
}

TEST(FindInputFileTest, NotFoundListsThePlacesTried) {
  const absl::StatusOr<std::string> found = FindInputFile("no/such.bin", "/x/bin", true);
  ASSERT_EQ(found.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(found.status().message(), HasSubstr("/x/bin.runfiles/int4kv/no/such.bin"));
  EXPECT_EQ(FindInputFile("/no/such/abs", "", true).status().code(), absl::StatusCode::kNotFound);
  // An absolute path to a directory says so, rather than that nothing is there.
  const std::string dir = std::getenv("TEST_TMPDIR");
  const absl::StatusOr<std::string> directory = FindInputFile(dir, "", true);
  EXPECT_EQ(directory.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(directory.status().message(), HasSubstr("is a directory, not a file"));
}

// --model=model.ckpt (no '/', not *.bin): an existing file is a checkpoint; before, any such
// name was taken for a preset and failed as an unknown one.
TEST(ResolveModelFlagTest, AnExistingFileWinsOverAPresetName) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  std::ofstream(dir + "/model.ckpt") << "x";
  setenv("BUILD_WORKING_DIRECTORY", dir.c_str(), 1);
  const absl::StatusOr<ModelFlag> flag = ResolveModelFlag("model.ckpt", 3, "");
  unsetenv("BUILD_WORKING_DIRECTORY");
  ASSERT_TRUE(flag.ok()) << flag.status();
  EXPECT_EQ(flag->source.kind, ModelSource::Kind::kCheckpoint);
  EXPECT_EQ(flag->source.path, "model.ckpt");
  EXPECT_EQ(flag->source.ToString(), "model.ckpt");
  EXPECT_EQ(flag->file, dir + "/model.ckpt");
}

// A directory named like a preset (downloaded weights, say) is not a checkpoint file.
TEST(ResolveModelFlagTest, ADirectoryDoesNotShadowAPreset) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  ASSERT_EQ(system(("mkdir -p " + dir + "/llama8b").c_str()), 0);
  setenv("BUILD_WORKING_DIRECTORY", dir.c_str(), 1);
  const absl::StatusOr<ModelFlag> flag = ResolveModelFlag("llama8b", 3, "");
  unsetenv("BUILD_WORKING_DIRECTORY");
  ASSERT_TRUE(flag.ok()) << flag.status();
  EXPECT_EQ(flag->source.kind, ModelSource::Kind::kPreset);
  EXPECT_EQ(flag->file, "");
}

TEST(ResolveModelFlagTest, PresetsAndCheckpointPaths) {
  absl::StatusOr<ModelFlag> flag = ResolveModelFlag("llama8b:2", 5, "");
  ASSERT_TRUE(flag.ok()) << flag.status();
  EXPECT_EQ(flag->source.kind, ModelSource::Kind::kPreset);
  EXPECT_EQ(flag->source.ToString(), "llama8b:2");
  EXPECT_EQ(flag->source.seed, 5u);
  EXPECT_EQ(flag->file, "");
  flag = ResolveModelFlag("testdata/models/stories260K.bin", 1, "");
  ASSERT_TRUE(flag.ok()) << flag.status();
  EXPECT_EQ(flag->source.kind, ModelSource::Kind::kCheckpoint);
  EXPECT_EQ(flag->file, "testdata/models/stories260K.bin");
  // A path by its form must exist: no fallback to a preset.
  flag = ResolveModelFlag("no/such/model.bin", 1, "");
  EXPECT_EQ(flag.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(flag.status().message(),
              HasSubstr("--model = 'no/such/model.bin': no readable file no/such/model.bin"));
  // An empty flag names it too.
  flag = ResolveModelFlag("", 1, "");
  EXPECT_FALSE(flag.ok());
  EXPECT_THAT(flag.status().message(), HasSubstr("--model: "));
}

TEST(ResolveModelFlagTest, NeitherFileNorPresetNamesBothReadings) {
  for (const char* text : {"model.ckpt.missing", "llama8b:0"}) {
    const absl::StatusOr<ModelFlag> flag = ResolveModelFlag(text, 1, "");
    ASSERT_EQ(flag.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(flag.status().message(),
                HasSubstr(absl::StrCat("--model = '", text,
                                       "' is neither a checkpoint file (no "
                                       "readable file ",
                                       text, "; tried ")))
        << text;
    EXPECT_THAT(flag.status().message(), HasSubstr(") nor a preset (")) << text;
  }
  EXPECT_THAT(ResolveModelFlag("model.ckpt.missing", 1, "").status().message(),
              HasSubstr("unknown model preset 'model.ckpt.missing': must be tiny or llama8b"));
  EXPECT_THAT(ResolveModelFlag("llama8b:0", 1, "").status().message(),
              HasSubstr("layer count '0' is invalid"));
  EXPECT_THAT(ResolveModelFlag("", 1, "").status().message(), HasSubstr("empty"));
}

TEST(CheckEngineFlagsTest, NamesTheFlagAndItsLimit) {
  EXPECT_TRUE(CheckEngineFlags(EngineConfig()).ok());
  const std::pair<void (*)(EngineConfig&), const char*> cases[] = {
      {[](EngineConfig& c) { c.max_batch = 0; },
       "--max_batch = 0 is invalid: must be in [1, 4096]"},
      {[](EngineConfig& c) { c.max_batch = 4097; },
       "--max_batch = 4097 is invalid: must be in [1, 4096]"},
      {[](EngineConfig& c) { c.max_queue = kMaxEngineQueue + 1; },
       "--max_queue = 1048577 is invalid: must be in [1, 1048576]"},
      {[](EngineConfig& c) { c.max_seq_len = -3; }, "--max_seq_len = -3 is invalid"},
      {[](EngineConfig& c) { c.max_seq_len = 1; }, "--max_seq_len = 1 is invalid"},
      {[](EngineConfig& c) { c.threads = -1; }, "--threads = -1 is invalid"},
      {[](EngineConfig& c) { c.max_new_tokens_limit = -1; }, "--max_new_tokens = -1 is invalid"},
      {[](EngineConfig& c) { c.group_size = 12; }, "--kv_group_size = 12 is invalid"},
      {[](EngineConfig& c) { c.threads = 2000; }, "--threads = 2000 is invalid"},
      {[](EngineConfig& c) { c.kv_gpu_memory_fraction = 0.5; },
       "--kv_cache_size = 0.5 is a fraction of GPU memory, which needs --backend=cuda"},
  };
  for (const auto& [edit, expected] : cases) {
    EngineConfig config;
    edit(config);
    const absl::Status status = CheckEngineFlags(config);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << expected;
    EXPECT_THAT(status.message(), HasSubstr(expected));
  }
  EngineConfig on_cuda;
  on_cuda.device = "cuda";
  on_cuda.kv_gpu_memory_fraction = 0.5;
  EXPECT_TRUE(CheckEngineFlags(on_cuda).ok());
}

TEST(CheckEngineFlagsTest, AgainstTheModelNamesTheFlag) {
  ModelConfig model;  // stories260K's shape: head_dim 8, max_seq_len 512
  model.dim = 64;
  model.hidden_dim = 172;
  model.num_layers = 5;
  model.q_heads = 8;
  model.kv_heads = 4;
  model.vocab_size = 512;
  model.max_seq_len = 512;
  EXPECT_TRUE(CheckEngineFlagsForModel(EngineConfig(), model).ok());
  const std::pair<void (*)(EngineConfig&), const char*> cases[] = {
      {[](EngineConfig& c) { c.max_seq_len = 513; },
       "--max_seq_len = 513 is invalid: must be 0 (the model's) or in [2, 512]"},
      {[](EngineConfig& c) { c.max_new_tokens_limit = 512; },
       "--max_new_tokens = 512 is invalid: must be 0 (max_seq_len - 1) or in [1, 511]"},
      {[](EngineConfig& c) {
         c.max_seq_len = 100;
         c.max_new_tokens_limit = 100;
       },
       "--max_new_tokens = 100 is invalid: must be 0 (max_seq_len - 1) or in [1, 99]"},
      {[](EngineConfig& c) { c.group_size = 16; },
       "--kv_group_size = 16 is invalid: must be a divisor of the model's head_dim (8)"},
      {[](EngineConfig& c) { c.kv_budget_bytes = 719; },
       "--kv_cache_size = 719 bytes holds fewer than the 2 token slots a request needs: 240 "
       "bytes per token"},
  };
  for (const auto& [edit, expected] : cases) {
    EngineConfig config;
    edit(config);
    const absl::Status status = CheckEngineFlagsForModel(config, model);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << expected;
    EXPECT_THAT(status.message(), HasSubstr(expected));
  }
  EngineConfig fits;
  fits.kv_budget_bytes = 720;  // two slots and the reserved one
  fits.max_new_tokens_limit = 511;
  EXPECT_TRUE(CheckEngineFlagsForModel(fits, model).ok());
}

TEST(LoweredLimitWarningsTest, NamesEachFlagTheCacheLowered) {
  EngineConfig asked;
  asked.max_seq_len = 400;
  asked.max_new_tokens_limit = 300;
  // A cache of 99 slots: requests reach 99 tokens, 98 of them new.
  const std::vector<std::string> warnings = LoweredLimitWarnings(asked, {99, 98, 99});
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_THAT(warnings[0], HasSubstr("--max_seq_len = 400 is lowered to 99: the KV cache holds "
                                     "99 token slots"));
  EXPECT_THAT(warnings[1], HasSubstr("--max_new_tokens = 300 is lowered to 98"));
  // Flags left at 0 (the model's) are not the operator's to be told about; values that fit
  // are served as asked.
  EXPECT_TRUE(LoweredLimitWarnings(EngineConfig(), {99, 98, 99}).empty());
  asked.max_seq_len = 99;
  asked.max_new_tokens_limit = 98;
  EXPECT_TRUE(LoweredLimitWarnings(asked, {99, 98, 99}).empty());
  // A cache at its largest: a larger --kv_cache_size was cut down to it.
  const std::vector<std::string> largest =
      LoweredLimitWarnings(EngineConfig(), {512, 511, kMaxCapacitySlots});
  ASSERT_EQ(largest.size(), 1u);
  EXPECT_THAT(largest[0], HasSubstr("--kv_cache_size: the KV cache holds at most 2147483646"));
}

TEST(ReadInputFileTest, ReadsWholeFileOrNamesWhat) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/cert.pem";
  std::ofstream(path) << "line1\nline2\n";
  EXPECT_EQ(*ReadInputFile(path, "--tls_cert"), "line1\nline2\n");
  const absl::Status missing = ReadInputFile(path + ".none", "--tls_key").status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.message(), HasSubstr("--tls_key"));
  // std::ifstream opens a directory and reads nothing from it: that must not pass as empty.
  const std::string dir = std::getenv("TEST_TMPDIR");
  const absl::Status directory = ReadInputFile(dir, "--tls_cert").status();
  EXPECT_EQ(directory.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(directory.message(), HasSubstr("--tls_cert: " + dir + " is a directory"));
}

TEST(ResolveAuthTokenTest, FlagOrFileNamingTheFlagOnErrors) {
  const std::string dir = std::getenv("TEST_TMPDIR");
  EXPECT_EQ(*ResolveAuthToken("", "", "prog"), "");
  EXPECT_EQ(*ResolveAuthToken("s3cret", "", "prog"), "s3cret");
  std::ofstream(dir + "/token") << "  s3cret-from-file\n";
  EXPECT_EQ(*ResolveAuthToken("", dir + "/token", "prog"), "s3cret-from-file");

  const absl::Status both = ResolveAuthToken("a", dir + "/token", "prog").status();
  EXPECT_EQ(both.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(both.message(), HasSubstr("--auth_token and --auth_token_file are alternatives"));
  const absl::Status missing = ResolveAuthToken("", dir + "/no-token", "prog").status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.message(), HasSubstr("--auth_token_file"));
  std::ofstream(dir + "/blank") << " \n\n";
  const absl::Status blank = ResolveAuthToken("", dir + "/blank", "prog").status();
  EXPECT_EQ(blank.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(blank.message(), HasSubstr("holds no token"));
  // A token a client cannot send; the message names where, never the secret itself.
  std::ofstream(dir + "/two-words") << "secret words\n";
  const absl::Status space = ResolveAuthToken("", dir + "/two-words", "prog").status();
  EXPECT_EQ(space.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(space.message(), HasSubstr("--auth_token_file: the token's character 7 of 12"));
  EXPECT_THAT(space.message(), ::testing::Not(HasSubstr("secret")));
  const absl::Status control = ResolveAuthToken("ab\x01", "", "prog").status();
  EXPECT_THAT(control.message(), HasSubstr("--auth_token: the token's character 3 of 3"));
  const absl::Status del = ResolveAuthToken("ab\x7f", "", "prog").status();
  EXPECT_THAT(del.message(), HasSubstr("--auth_token: the token's character 3 of 3"));
  EXPECT_EQ(*ResolveAuthToken("!~", "", "prog"), "!~");  // printable ASCII's ends
}

// Output files follow the caller's directory under `bazel run`, as input files do; absolute
// paths, and every path outside `bazel run`, stay as given.
TEST(ResolveOutputPathTest, RelativePathsGoToTheCallersDirectory) {
  setenv("BUILD_WORKING_DIRECTORY", "/home/user/work", 1);
  EXPECT_EQ(ResolveOutputPath("load.json"), "/home/user/work/load.json");
  EXPECT_EQ(ResolveOutputPath("out/load.json"), "/home/user/work/out/load.json");
  EXPECT_EQ(ResolveOutputPath("/tmp/load.json"), "/tmp/load.json");
  EXPECT_EQ(ResolveOutputPath(""), "");
  unsetenv("BUILD_WORKING_DIRECTORY");
  EXPECT_EQ(ResolveOutputPath("load.json"), "load.json");
}

// A file not found lists each place tried once.
TEST(FindInputFileTest, NotFoundListsEachPlaceOnce) {
  const absl::StatusOr<std::string> path = FindInputFile("no/such/file.bin", "", true);
  ASSERT_EQ(path.status().code(), absl::StatusCode::kNotFound);
  const std::string message(path.status().message());
  const std::vector<std::string> tried =
      absl::StrSplit(message.substr(message.find("tried ") + 6), ", ");
  for (size_t i = 0; i < tried.size(); ++i) {
    for (size_t j = i + 1; j < tried.size(); ++j) EXPECT_NE(tried[i], tried[j]) << message;
  }
}

}  // namespace
}  // namespace int4kv
