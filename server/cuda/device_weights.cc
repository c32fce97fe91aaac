#include "server/cuda/device_weights.h"

#include <algorithm>
#include <initializer_list>

#include "absl/strings/str_cat.h"
#include "common/cuda_check.h"
#include "common/status_macros.h"
#include "server/cuda/llama_kernels.h"

namespace int4kv {
namespace {

constexpr int64_t kStagingFloats = int64_t{16} << 20;  // 64 MiB of float32 per staged chunk

// Converts host float32 tensors into consecutive parts of one device buffer.
class Converter {
 public:
  Converter(DType dtype, CudaStream stream) : dtype_(dtype), stream_(stream) {}

  absl::Status Init(int64_t largest_tensor) {
    return staging_.Allocate(sizeof(float) * std::min(largest_tensor, kStagingFloats),
                             "the weight staging buffer");
  }

  // dest = concat(parts) converted to dtype_, allocated here.
  absl::Status Half(std::initializer_list<const std::vector<float>*> parts, const char* what,
                    DeviceBuffer* dest) {
    int64_t total = 0;
    for (const std::vector<float>* part : parts) total += static_cast<int64_t>(part->size());
    RETURN_IF_ERROR(dest->Allocate(total * DTypeSize(dtype_), what));
    int64_t offset = 0;
    for (const std::vector<float>* part : parts) {
      const int64_t size = static_cast<int64_t>(part->size());
      for (int64_t begin = 0; begin < size; begin += kStagingFloats) {
        const int64_t count = std::min(kStagingFloats, size - begin);
        // The previous chunk's conversion reads the staging buffer: wait for it.
        CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
        CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(staging_.get(), part->data() + begin,
                                             count * sizeof(float), cudaMemcpyHostToDevice,
                                             stream_));
        RETURN_IF_ERROR(LaunchConvertFloat(
            staging_.as<float>(), count, dtype_,
            static_cast<char*>(dest->get()) + (offset + begin) * DTypeSize(dtype_), stream_));
      }
      offset += size;
    }
    return absl::OkStatus();
  }

  // dest = a float32 copy of `values`.
  absl::Status Float(const std::vector<float>& values, const char* what, DeviceBuffer* dest) {
    RETURN_IF_ERROR(dest->Allocate(values.size() * sizeof(float), what));
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dest->get(), values.data(), values.size() * sizeof(float),
                                         cudaMemcpyHostToDevice, stream_));
    return absl::OkStatus();
  }

 private:
  DType dtype_;
  CudaStream stream_;
  DeviceBuffer staging_;  // [min(largest tensor, kStagingFloats)] float32
};

}  // namespace

int64_t DeviceLlamaWeights::bytes() const {
  int64_t total = token_embedding.bytes() + final_norm.bytes() + classifier.bytes();
  for (const DeviceLayerWeights& l : layers) {
    total += l.attention_norm.bytes() + l.wqkv.bytes() + l.wo.bytes() + l.ffn_norm.bytes() +
             l.w13.bytes() + l.w2.bytes();
  }
  return total;
}

int64_t DeviceLlamaWeights::step_read_bytes() const {
  return config.shared_classifier ? bytes() : bytes() - token_embedding.bytes();
}

absl::StatusOr<DeviceLlamaWeights> DeviceLlamaWeights::Upload(const LlamaWeights& weights,
                                                              DType dtype, CudaStream stream) {
  RETURN_IF_ERROR(weights.Validate());
  if (dtype != DType::kFloat16 && dtype != DType::kBFloat16) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA weight dtype ", DTypeName(dtype),
                                                   " is invalid: must be float16 or bfloat16"));
  }
  const ModelConfig& c = weights.config;
  DeviceLlamaWeights device;
  device.config = c;
  device.dtype = dtype;
  int64_t largest = static_cast<int64_t>(weights.token_embedding.size());
  for (const LlamaLayerWeights& l : weights.layers) {
    for (const std::vector<float>* t : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3}) {
      largest = std::max(largest, static_cast<int64_t>(t->size()));
    }
  }
  Converter convert(dtype, stream);
  RETURN_IF_ERROR(convert.Init(largest));
  RETURN_IF_ERROR(
      convert.Half({&weights.token_embedding}, "the token embedding", &device.token_embedding));
  device.layers.resize(c.num_layers);
  for (int32_t i = 0; i < c.num_layers; ++i) {
    const LlamaLayerWeights& l = weights.layers[i];
    DeviceLayerWeights& d = device.layers[i];
    // Out of memory names the layer too: how far the upload got.
    const auto of_layer = [i](const char* tensor) { return absl::StrCat(tensor, " of layer ", i); };
    RETURN_IF_ERROR(
        convert.Float(l.attention_norm, of_layer("the attention norm").c_str(), &d.attention_norm));
    RETURN_IF_ERROR(convert.Half({&l.wq, &l.wk, &l.wv},
                                 of_layer("the fused wq/wk/wv matrix").c_str(), &d.wqkv));
    RETURN_IF_ERROR(convert.Half({&l.wo}, of_layer("the wo matrix").c_str(), &d.wo));
    RETURN_IF_ERROR(convert.Float(l.ffn_norm, of_layer("the FFN norm").c_str(), &d.ffn_norm));
    RETURN_IF_ERROR(
        convert.Half({&l.w1, &l.w3}, of_layer("the fused w1/w3 matrix").c_str(), &d.w13));
    RETURN_IF_ERROR(convert.Half({&l.w2}, of_layer("the w2 matrix").c_str(), &d.w2));
  }
  RETURN_IF_ERROR(convert.Float(weights.final_norm, "the final norm", &device.final_norm));
  if (!c.shared_classifier) {
    RETURN_IF_ERROR(convert.Half({&weights.classifier}, "the classifier", &device.classifier));
  }
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return device;
}

}  // namespace int4kv
