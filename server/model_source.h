// Where a model's weights come from, parsed from one string at the edge (a flag, a config
// file): a preset name with an optional layer count ("tiny", "llama8b", "llama8b:2") or a
// llama2.c checkpoint path (anything containing '/' or ending in ".bin"). The server's --model
// also takes any other existing file as a checkpoint (ResolveModelFlag in
// server_main_options.h).
#ifndef INT4KV_SERVER_MODEL_SOURCE_H_
#define INT4KV_SERVER_MODEL_SOURCE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/llama_weights.h"

namespace int4kv {

// The default model: the stories260K checkpoint, relative to the repository root (which is
// also the working directory of `bazel test` and `bazel run` with the file as a data dep).
constexpr char kDefaultModelPath[] = "testdata/models/stories260K.bin";

struct ModelSource {
  enum class Kind { kCheckpoint, kPreset };
  Kind kind = Kind::kCheckpoint;
  std::string path;        // kCheckpoint
  std::string preset;      // kPreset: "tiny" | "llama8b"
  int32_t num_layers = 0;  // kPreset: 0 keeps the preset's layer count
  uint64_t seed = 1;       // kPreset: weight seed

  // The canonical text form ("llama8b:2", "testdata/models/stories260K.bin").
  std::string ToString() const;
};

// InvalidArgument for an empty string, an unknown preset, or a bad layer count (which must be
// a decimal in [1, kMaxModelLayers]).
absl::StatusOr<ModelSource> ParseModelSource(absl::string_view text, uint64_t seed = 1);

// Loads (checkpoint) or generates (preset) the weights. `threads` is used by presets.
absl::StatusOr<LlamaWeights> LoadModelWeights(const ModelSource& source, int threads = 0);

}  // namespace int4kv

#endif  // INT4KV_SERVER_MODEL_SOURCE_H_
