#include "server/llama2c_checkpoint.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/model_source.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;

std::vector<char> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Writes `bytes` to a fresh file in the test's temp dir and returns its path.
std::string WriteTemp(const std::string& name, const std::vector<char>& bytes) {
  const char* dir = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(dir != nullptr ? dir : "/tmp") + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    original_ = ReadBytes(kDefaultModelPath);
    ASSERT_EQ(original_.size(), 1056540u);
  }

  // The real file with header field `index` (0 dim .. 6 seq_len) replaced.
  std::vector<char> WithHeaderField(int index, int32_t value) const {
    std::vector<char> bytes = original_;
    std::memcpy(bytes.data() + 4 * index, &value, sizeof(value));
    return bytes;
  }

  // Loads `bytes` from a temp file; expects InvalidArgument whose message has `part`.
  void ExpectRejected(const std::string& name, const std::vector<char>& bytes,
                      const std::string& part) {
    const absl::StatusOr<LlamaWeights> loaded = LoadLlama2cCheckpoint(WriteTemp(name, bytes));
    ASSERT_FALSE(loaded.ok()) << name;
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument) << loaded.status();
    EXPECT_THAT(std::string(loaded.status().message()), HasSubstr(part)) << name;
  }

  std::vector<char> original_;
};

TEST_F(CheckpointTest, LoadsStories260K) {
  const absl::StatusOr<LlamaWeights> weights = LoadLlama2cCheckpoint(kDefaultModelPath);
  ASSERT_TRUE(weights.ok()) << weights.status();
  const ModelConfig& c = weights->config;
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.num_layers, 5);
  EXPECT_EQ(c.q_heads, 8);
  EXPECT_EQ(c.kv_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.max_seq_len, 512);
  EXPECT_EQ(c.head_dim(), 8);
  EXPECT_TRUE(c.shared_classifier);
  EXPECT_EQ(c.bos_token, 1);
  EXPECT_EQ(c.eos_token, 1);  // BOS delimits llama2.c's stories (run.c stops on it)
  EXPECT_TRUE(weights->Validate().ok());
  EXPECT_EQ(Llama2cFileBytes(c), 1056540);
  // Spot checks against the raw bytes: the first embedding float, the last w3 float of the last
  // layer, and the final norm.
  const float* raw = reinterpret_cast<const float*>(original_.data() + kLlama2cHeaderBytes);
  EXPECT_EQ(weights->token_embedding[0], raw[0]);
  const size_t w3_end = 32768 + 320 + 20480 + 10240 + 10240 + 20480 + 320 + 3 * 55040;
  EXPECT_EQ(weights->layers[4].w3.back(), raw[w3_end - 1]);
  EXPECT_EQ(weights->final_norm[0], raw[w3_end]);
  EXPECT_EQ(weights->final_norm[63], raw[w3_end + 63]);
  EXPECT_EQ(&weights->lm_head(), &weights->token_embedding);
}

TEST_F(CheckpointTest, MissingFileIsNotFound) {
  const absl::StatusOr<LlamaWeights> loaded = LoadLlama2cCheckpoint("/nonexistent/model.bin");
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("/nonexistent/model.bin"));
}

TEST_F(CheckpointTest, TruncatedFiles) {
  ExpectRejected("empty.bin", {}, "truncated: 0 bytes, shorter than the 28-byte header");
  ExpectRejected("header_part.bin", std::vector<char>(original_.begin(), original_.begin() + 20),
                 "shorter than the 28-byte header");
  ExpectRejected("header_only.bin", std::vector<char>(original_.begin(), original_.begin() + 28),
                 "truncated: 28 bytes");
  ExpectRejected("half.bin",
                 std::vector<char>(original_.begin(), original_.begin() + original_.size() / 2),
                 "needs exactly 1056540 bytes");
  ExpectRejected("minus_one.bin", std::vector<char>(original_.begin(), original_.end() - 1),
                 "(1 missing)");
}

TEST_F(CheckpointTest, ExtraBytes) {
  std::vector<char> bytes = original_;
  bytes.insert(bytes.end(), 12, '\0');
  ExpectRejected("extra.bin", bytes, "oversized: 1056552 bytes");
  ExpectRejected("extra2.bin", bytes, "(12 extra)");
}

TEST_F(CheckpointTest, BadHeaderFields) {
  ExpectRejected("dim0.bin", WithHeaderField(0, 0), "field dim = 0 is invalid: must be in [1, ");
  ExpectRejected("hidden_neg.bin", WithHeaderField(1, -172), "field hidden_dim = -172");
  ExpectRejected("layers0.bin", WithHeaderField(2, 0), "field n_layers = 0");
  ExpectRejected("layers_neg.bin", WithHeaderField(2, -5), "field n_layers = -5");
  ExpectRejected("heads_neg.bin", WithHeaderField(3, -8), "field n_heads = -8");
  ExpectRejected("vocab0.bin", WithHeaderField(5, 0), "field vocab_size = 0");
  ExpectRejected("seq0.bin", WithHeaderField(6, 0), "field seq_len = 0");
  ExpectRejected("heads7.bin", WithHeaderField(3, 7),
                 "n_heads = 7 is invalid: must be a divisor "
                 "of dim (64)");
  ExpectRejected("kv3.bin", WithHeaderField(4, 3),
                 "n_kv_heads = 3 is invalid: must be a divisor of n_heads (8)");
  ExpectRejected("kv16.bin", WithHeaderField(4, 16), "n_kv_heads = 16");
  // 64 / 32 = head_dim 2 is fine for RoPE, but the file is then the wrong size.
  ExpectRejected("heads32.bin", WithHeaderField(3, 32), "needs exactly");
  ExpectRejected("heads64.bin", WithHeaderField(3, 64), "head_dim) = 1 is invalid: must be even");
  ExpectRejected("vocab_min.bin", WithHeaderField(5, std::numeric_limits<int32_t>::min()),
                 "field vocab_size = -2147483648");
  // A negative vocab means a stored classifier: the file is then 512 * 64 floats short.
  ExpectRejected("vocab_unshared.bin", WithHeaderField(5, -512), "(131072 missing)");
}

TEST_F(CheckpointTest, HugeSizesFailWithoutAllocating) {
  // Each field at its largest accepted value: the implied size is far beyond the file (and
  // would overflow 32-bit arithmetic), which must be reported, not allocated.
  std::vector<char> bytes = original_;
  const int32_t huge[] = {kMaxModelDim, kMaxModelHiddenDim, kMaxModelLayers, 1024,
                          1024,         kMaxModelVocab,     kMaxModelSeqLen};
  std::memcpy(bytes.data(), huge, sizeof(huge));
  ExpectRejected("huge.bin", bytes, "truncated: 1056540 bytes");
  ExpectRejected("dim_max.bin", WithHeaderField(0, std::numeric_limits<int32_t>::max()),
                 "field dim = 2147483647");
  ExpectRejected("hidden_max.bin", WithHeaderField(1, std::numeric_limits<int32_t>::max()),
                 "field hidden_dim = 2147483647");
  ExpectRejected("seq_max.bin", WithHeaderField(6, std::numeric_limits<int32_t>::max()),
                 "field seq_len = 2147483647");
}

TEST_F(CheckpointTest, NonFiniteWeight) {
  std::vector<char> bytes = original_;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // Element 5 of wq[1]: header + embedding + rms_att + wq[0] + 5 floats.
  const size_t offset = kLlama2cHeaderBytes + 4 * (32768 + 320 + 4096 + 5);
  std::memcpy(bytes.data() + offset, &nan, sizeof(nan));
  ExpectRejected("nan.bin", bytes, "tensor wq[1] has a non-finite value (nan) at element 5");
}

// A tensor's last element is checked too: NaN in the final norm's last float.
TEST_F(CheckpointTest, NonFiniteLastElement) {
  std::vector<char> bytes = original_;
  const float inf = std::numeric_limits<float>::infinity();
  // Every layer's tensor of one kind in turn (as in LoadsStories260K), then the final norm.
  const size_t final_norm = 32768 + 320 + 20480 + 10240 + 10240 + 20480 + 320 + 3 * 55040;
  std::memcpy(bytes.data() + kLlama2cHeaderBytes + 4 * (final_norm + 63), &inf, sizeof(inf));
  ExpectRejected("inf_last.bin", bytes,
                 "tensor rms_final has a non-finite value (inf) at element 63");
}

// A negative vocab_size means the file stores its own classifier after the RoPE tables: the
// loader must skip exactly those tables and read it.
TEST_F(CheckpointTest, AStoredClassifierIsReadAfterTheRopeTables) {
  std::vector<char> bytes = WithHeaderField(5, -512);
  std::vector<float> classifier(512 * 64);
  for (size_t i = 0; i < classifier.size(); ++i)
    classifier[i] = 0.001f * static_cast<float>(i % 97);
  const char* raw = reinterpret_cast<const char*>(classifier.data());
  bytes.insert(bytes.end(), raw, raw + 4 * classifier.size());
  const absl::StatusOr<LlamaWeights> loaded =
      LoadLlama2cCheckpoint(WriteTemp("unshared.bin", bytes));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE(loaded->config.shared_classifier);
  EXPECT_EQ(loaded->classifier, classifier);
  EXPECT_EQ(&loaded->lm_head(), &loaded->classifier);
}

TEST_F(CheckpointTest, VersionedExportIsNamed) {
  ExpectRejected("v1.bin", WithHeaderField(0, 0x616b3432), "versioned llama2.c export");
}

TEST(ConfigFromHeaderTest, NamesTheField) {
  Llama2cHeader header{64, 172, 5, 8, 4, 512, 512};
  ASSERT_TRUE(ConfigFromLlama2cHeader(header).ok());
  header.vocab_size = 1;  // cannot hold EOS (1, BOS)
  EXPECT_THAT(std::string(ConfigFromLlama2cHeader(header).status().message()),
              HasSubstr("EOS token"));
}

}  // namespace
}  // namespace int4kv
