#include "server/model_source.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/llama2c_checkpoint.h"
#include "server/random_weights.h"

namespace int4kv {

std::string ModelSource::ToString() const {
  if (kind == Kind::kCheckpoint) return path;
  return num_layers == 0 ? preset : absl::StrCat(preset, ":", num_layers);
}

absl::StatusOr<ModelSource> ParseModelSource(absl::string_view text, uint64_t seed) {
  if (text.empty()) {
    return absl::InvalidArgumentError(
        "model source is empty: must be a preset (tiny, llama8b[:layers]) or a checkpoint path");
  }
  ModelSource source;
  source.seed = seed;
  if (absl::StrContains(text, '/') || absl::EndsWith(text, ".bin")) {
    source.kind = ModelSource::Kind::kCheckpoint;
    source.path = std::string(text);
    return source;
  }
  source.kind = ModelSource::Kind::kPreset;
  const size_t colon = text.find(':');
  source.preset = std::string(text.substr(0, colon));
  if (colon != absl::string_view::npos) {
    const absl::string_view layers = text.substr(colon + 1);
    int32_t count = 0;
    if (!absl::SimpleAtoi(layers, &count) || count < 1 || count > kMaxModelLayers) {
      return absl::InvalidArgumentError(absl::StrCat("model source '", text, "': layer count '",
                                                     layers, "' is invalid: must be in [1, ",
                                                     kMaxModelLayers, "]"));
    }
    source.num_layers = count;
  }
  // Check the name (and the layer count against the preset) now, at the edge.
  RETURN_IF_ERROR(PresetConfig(source.preset, source.num_layers).status());
  return source;
}

absl::StatusOr<LlamaWeights> LoadModelWeights(const ModelSource& source, int threads) {
  if (source.kind == ModelSource::Kind::kCheckpoint) return LoadLlama2cCheckpoint(source.path);
  ASSIGN_OR_RETURN(ModelConfig config, PresetConfig(source.preset, source.num_layers));
  return RandomWeights(config, source.seed, threads);
}

}  // namespace int4kv
