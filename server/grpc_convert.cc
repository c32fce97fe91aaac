#include "server/grpc_convert.h"

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace int4kv {
namespace {

v1::KvQuantMode QuantModeToProto(QuantMode mode) {
  switch (mode) {
    case QuantMode::kSymmetric:
      return v1::KV_QUANT_MODE_SYMMETRIC;
    case QuantMode::kAsymmetric:
      return v1::KV_QUANT_MODE_ASYMMETRIC;
  }
  return v1::KV_QUANT_MODE_UNSPECIFIED;
}

v1::KvParamDtype ParamDtypeToProto(ParamDtype dtype) {
  switch (dtype) {
    case ParamDtype::kFloat16:
      return v1::KV_PARAM_DTYPE_FLOAT16;
    case ParamDtype::kBFloat16:
      return v1::KV_PARAM_DTYPE_BFLOAT16;
  }
  return v1::KV_PARAM_DTYPE_UNSPECIFIED;
}

}  // namespace

absl::Status ValidateRequestId(absl::string_view request_id) {
  if (request_id.size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("request_id has ", request_id.size(), " bytes: at most ", kMaxRequestIdBytes));
  }
  for (size_t i = 0; i < request_id.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(request_id[i]);
    if (c < 0x20 || c > 0x7e) {
      return absl::InvalidArgumentError(
          absl::StrCat("request_id byte ", i, " = ", static_cast<int>(c),
                       " is invalid: must be printable ASCII (32 to 126)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<GenerateRequest> RequestFromProto(const v1::GenerateRequest& proto) {
  if (absl::Status s = ValidateRequestId(proto.request_id()); !s.ok()) return s;
  GenerateRequest request;
  request.prompt.assign(proto.prompt().begin(), proto.prompt().end());
  request.max_new_tokens = proto.max_new_tokens();
  const v1::SamplingParams& sampling = proto.sampling();
  request.sampling.temperature = sampling.temperature();
  request.sampling.top_k = sampling.top_k();
  request.sampling.top_p = sampling.has_top_p() ? sampling.top_p() : 1.0f;
  if (sampling.has_seed()) request.sampling.seed = sampling.seed();
  request.stop_token_ids.assign(sampling.stop_token_ids().begin(), sampling.stop_token_ids().end());
  request.ignore_eos = sampling.ignore_eos();
  return request;
}

v1::FinishReason FinishReasonToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case FinishReason::kEos:
      return v1::FINISH_REASON_EOS;
    case FinishReason::kCancelled:
    case FinishReason::kError:
      break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void UsageToProto(const Usage& usage, v1::Usage* proto) {
  proto->set_prompt_tokens(usage.prompt_tokens);
  proto->set_generated_tokens(usage.generated_tokens);
  proto->set_time_to_first_token_us(absl::ToInt64Microseconds(usage.time_to_first_token));
  proto->set_total_time_us(absl::ToInt64Microseconds(usage.total_time));
}

v1::ServerInfo ServerInfoToProto(const EngineInfo& info, const ServerDetails& details) {
  v1::ServerInfo proto;
  proto.set_version(details.version);

  v1::ModelInfo* model = proto.mutable_model();
  model->set_source(info.model_source);
  model->set_vocab_size(info.model.vocab_size);
  model->set_dim(info.model.dim);
  model->set_hidden_dim(info.model.hidden_dim);
  model->set_num_layers(info.model.num_layers);
  model->set_q_heads(info.model.q_heads);
  model->set_kv_heads(info.model.kv_heads);
  model->set_head_dim(info.model.head_dim());
  model->set_max_seq_len(info.model.max_seq_len);
  model->set_bos_token(info.model.bos_token);
  model->set_eos_token(info.model.eos_token);

  v1::KvCacheInfo* kv = proto.mutable_kv_cache();
  kv->set_attention(info.attention);
  kv->set_group_size(info.group_size);
  kv->set_mode(QuantModeToProto(info.quant_mode));
  kv->set_param_dtype(ParamDtypeToProto(info.param_dtype));
  kv->set_bytes_per_token(info.kv_bytes_per_token);
  kv->set_pool_bytes(info.kv_pool_bytes);

  v1::CapacityInfo* capacity = proto.mutable_capacity();
  capacity->set_slots_total(info.slots_total);
  capacity->set_slots_free(info.slots_free);
  capacity->set_max_batch(info.max_batch);
  capacity->set_max_seq_len(info.max_seq_len);
  capacity->set_max_new_tokens(info.max_new_tokens_limit);
  capacity->set_max_queue(info.max_queue);
  capacity->set_max_step_tokens(info.max_step_tokens);
  capacity->set_running(info.running);
  capacity->set_queued(info.queued);
  capacity->set_engine_steps(info.steps);
  capacity->set_draining(info.draining);
  capacity->set_failure(info.failure);

  v1::BackendInfo* backend = proto.mutable_backend();
  backend->set_backend(info.device);
  backend->set_device_name(info.device_name);
  backend->set_cuda_graphs(info.cuda_graphs);
  for (int32_t bucket : info.graph_buckets) backend->add_graph_buckets(bucket);
  return proto;
}

}  // namespace int4kv
