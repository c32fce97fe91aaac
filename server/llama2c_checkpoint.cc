#include "server/llama2c_checkpoint.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace int4kv {
namespace {

// The magic of llama2.c's newer exports ("ak42"), which this loader does not read.
constexpr int32_t kVersionedExportMagic = 0x616b3432;

absl::Status BadField(absl::string_view field, int64_t value, absl::string_view allowed) {
  return absl::InvalidArgumentError(absl::StrCat("checkpoint header field ", field, " = ", value,
                                                 " is invalid: must be ", allowed));
}

absl::Status CheckPositive(absl::string_view field, int64_t value, int64_t limit) {
  if (value < 1 || value > limit) {
    return BadField(field, value, absl::StrCat("in [1, ", limit, "]"));
  }
  return absl::OkStatus();
}

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

// Reads `count` floats into `out` (resized) and checks that every one is finite.
absl::Status ReadTensor(std::FILE* file, absl::string_view path, absl::string_view name,
                        int64_t count, std::vector<float>* out) {
  try {
    out->resize(count);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat("checkpoint '", path, "': cannot allocate ",
                                                     count, " floats for tensor ", name));
  }
  if (count > 0 &&
      std::fread(out->data(), sizeof(float), count, file) != static_cast<size_t>(count)) {
    return absl::DataLossError(
        absl::StrCat("checkpoint '", path, "': reading tensor ", name, " failed"));
  }
  for (int64_t i = 0; i < count; ++i) {
    if (!std::isfinite((*out)[i])) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint '", path, "': tensor ", name,
                                                     " has a non-finite value (", (*out)[i],
                                                     ") at element ", i));
    }
  }
  return absl::OkStatus();
}

// Reads one per-layer tensor stored as [layers][count] into each layer's member.
absl::Status ReadLayered(std::FILE* file, absl::string_view path, absl::string_view name,
                         int64_t count, std::vector<LlamaLayerWeights>* layers,
                         std::vector<float> LlamaLayerWeights::*member) {
  for (size_t i = 0; i < layers->size(); ++i) {
    RETURN_IF_ERROR(
        ReadTensor(file, path, absl::StrCat(name, "[", i, "]"), count, &((*layers)[i].*member)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ConfigFromLlama2cHeader(const Llama2cHeader& header) {
  RETURN_IF_ERROR(CheckPositive("dim", header.dim, kMaxModelDim));
  RETURN_IF_ERROR(CheckPositive("hidden_dim", header.hidden_dim, kMaxModelHiddenDim));
  RETURN_IF_ERROR(CheckPositive("n_layers", header.n_layers, kMaxModelLayers));
  RETURN_IF_ERROR(CheckPositive("n_heads", header.n_heads, kMaxModelHeads));
  RETURN_IF_ERROR(CheckPositive("n_kv_heads", header.n_kv_heads, kMaxModelHeads));
  const int64_t vocab = std::abs(int64_t{header.vocab_size});
  if (vocab < 1 || vocab > kMaxModelVocab) {
    return BadField("vocab_size", header.vocab_size,
                    absl::StrCat("nonzero with |vocab_size| <= ", kMaxModelVocab));
  }
  RETURN_IF_ERROR(CheckPositive("seq_len", header.seq_len, kMaxModelSeqLen));
  if (header.dim % header.n_heads != 0) {
    return BadField("n_heads", header.n_heads, absl::StrCat("a divisor of dim (", header.dim, ")"));
  }
  if (header.n_heads % header.n_kv_heads != 0) {
    return BadField("n_kv_heads", header.n_kv_heads,
                    absl::StrCat("a divisor of n_heads (", header.n_heads, ")"));
  }
  if ((header.dim / header.n_heads) % 2 != 0) {
    return BadField("dim / n_heads (head_dim)", header.dim / header.n_heads,
                    "even (RoPE rotates pairs of elements)");
  }
  ModelConfig config;
  config.dim = header.dim;
  config.hidden_dim = header.hidden_dim;
  config.num_layers = header.n_layers;
  config.q_heads = header.n_heads;
  config.kv_heads = header.n_kv_heads;
  config.vocab_size = static_cast<int32_t>(vocab);
  config.max_seq_len = header.seq_len;
  config.shared_classifier = header.vocab_size > 0;
  // llama2.c's models end a sequence with BOS: their training text is tokenized with a BOS
  // before each story and no EOS, so a story's end is token 1, and run.c stops generating there.
  // Token 2 (Llama's EOS) is one these models never saw end anything.
  config.eos_token = config.bos_token;
  if (vocab <= config.eos_token) {
    return BadField("vocab_size", header.vocab_size,
                    absl::StrCat("large enough to hold the EOS token (", config.eos_token, ")"));
  }
  RETURN_IF_ERROR(config.Validate());
  return config;
}

int64_t Llama2cFileBytes(const ModelConfig& config) {
  const int64_t rope_tables = int64_t{2} * config.max_seq_len * (config.head_dim() / 2);
  return kLlama2cHeaderBytes + int64_t{sizeof(float)} * (config.ParameterCount() + rope_tables);
}

absl::StatusOr<LlamaWeights> LoadLlama2cCheckpoint(absl::string_view path) {
  const std::string path_string(path);
  File file(std::fopen(path_string.c_str(), "rb"));
  if (file == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("cannot open checkpoint '", path, "': ", std::strerror(errno)));
  }
  if (std::fseek(file.get(), 0, SEEK_END) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint '", path, "' is not seekable"));
  }
  const int64_t file_bytes = std::ftell(file.get());
  std::rewind(file.get());
  if (file_bytes < kLlama2cHeaderBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint '", path, "' is truncated: ", file_bytes,
                     " bytes, shorter than the ", kLlama2cHeaderBytes, "-byte header"));
  }
  int32_t fields[7];
  if (std::fread(fields, sizeof(int32_t), 7, file.get()) != 7) {
    return absl::DataLossError(absl::StrCat("checkpoint '", path, "': reading the header failed"));
  }
  if (fields[0] == kVersionedExportMagic) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint '", path,
                     "' is a versioned llama2.c export (magic \"ak42\"); only the legacy "
                     "(version 0) format is supported"));
  }
  const Llama2cHeader header{fields[0], fields[1], fields[2], fields[3],
                             fields[4], fields[5], fields[6]};
  absl::StatusOr<ModelConfig> config = ConfigFromLlama2cHeader(header);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat("checkpoint '", path, "': ", config.status().message()));
  }
  const int64_t expected = Llama2cFileBytes(*config);
  if (file_bytes != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint '", path, "' is ", file_bytes < expected ? "truncated" : "oversized", ": ",
        file_bytes, " bytes, but its header (", config->DebugString(), ") needs exactly ", expected,
        " bytes (", file_bytes < expected ? expected - file_bytes : file_bytes - expected,
        file_bytes < expected ? " missing)" : " extra)"));
  }

  LlamaWeights weights;
  weights.config = *config;
  weights.layers.resize(config->num_layers);
  const int64_t d = config->dim, h = config->hidden_dim, kv = config->kv_dim();
  const int64_t vocab = config->vocab_size;
  std::FILE* f = file.get();
  using L = LlamaLayerWeights;
  RETURN_IF_ERROR(ReadTensor(f, path, "token_embedding", vocab * d, &weights.token_embedding));
  RETURN_IF_ERROR(ReadLayered(f, path, "rms_att", d, &weights.layers, &L::attention_norm));
  RETURN_IF_ERROR(ReadLayered(f, path, "wq", d * d, &weights.layers, &L::wq));
  RETURN_IF_ERROR(ReadLayered(f, path, "wk", kv * d, &weights.layers, &L::wk));
  RETURN_IF_ERROR(ReadLayered(f, path, "wv", kv * d, &weights.layers, &L::wv));
  RETURN_IF_ERROR(ReadLayered(f, path, "wo", d * d, &weights.layers, &L::wo));
  RETURN_IF_ERROR(ReadLayered(f, path, "rms_ffn", d, &weights.layers, &L::ffn_norm));
  RETURN_IF_ERROR(ReadLayered(f, path, "w1", h * d, &weights.layers, &L::w1));
  RETURN_IF_ERROR(ReadLayered(f, path, "w2", d * h, &weights.layers, &L::w2));
  RETURN_IF_ERROR(ReadLayered(f, path, "w3", h * d, &weights.layers, &L::w3));
  RETURN_IF_ERROR(ReadTensor(f, path, "rms_final", d, &weights.final_norm));
  // The legacy RoPE tables are recomputed at run time; skip them.
  const int64_t rope_bytes =
      int64_t{2} * config->max_seq_len * (config->head_dim() / 2) * int64_t{sizeof(float)};
  if (std::fseek(f, static_cast<long>(rope_bytes), SEEK_CUR) != 0) {
    return absl::DataLossError(
        absl::StrCat("checkpoint '", path, "': skipping the RoPE tables failed"));
  }
  if (!config->shared_classifier) {
    RETURN_IF_ERROR(ReadTensor(f, path, "wcls", vocab * d, &weights.classifier));
  }
  RETURN_IF_ERROR(weights.Validate());
  return weights;
}

}  // namespace int4kv
