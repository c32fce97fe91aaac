#include "tools/load_stats.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "server/grpc_status.h"

namespace int4kv {

std::string CheckOkOutcome(const CallOutcome& o) {
  if (o.finish_reason == v1::FINISH_REASON_UNSPECIFIED) {
    return "status OK without a final response carrying a finish reason";
  }
  if (o.usage_generated_tokens != o.tokens) {
    return absl::StrCat("usage.generated_tokens = ", o.usage_generated_tokens, " but ", o.tokens,
                        " tokens were streamed");
  }
  if (o.tokens > o.max_new_tokens) {
    return absl::StrCat(o.tokens, " tokens streamed for max_new_tokens = ", o.max_new_tokens);
  }
  if (o.finish_reason == v1::FINISH_REASON_LENGTH && o.tokens != o.max_new_tokens) {
    return absl::StrCat("finish reason LENGTH after ", o.tokens,
                        " tokens for max_new_tokens = ", o.max_new_tokens);
  }
  if (o.ignore_eos && o.finish_reason == v1::FINISH_REASON_EOS) {
    return "finish reason EOS although the request set ignore_eos";
  }
  if (!o.ids_in_range) return "a token id outside [0, vocab_size)";
  return "";
}

void LoadStats::Record(const CallOutcome& outcome) {
  if (outcome.code != grpc::StatusCode::OK) {
    ++result_.failed;
    const std::string code = GrpcCodeName(outcome.code);
    if (result_.errors_by_code[code]++ == 0) result_.error_examples[code] = outcome.message;
    return;
  }
  ++result_.ok;
  result_.output_tokens += outcome.tokens;
  const std::string broken = CheckOkOutcome(outcome);
  if (!broken.empty()) {
    ++result_.bad_responses;
    if (first_bad_response_.empty()) first_bad_response_ = broken;
  }
  if (outcome.got_token) ttft_.Add(absl::ToDoubleMilliseconds(outcome.time_to_first_token));
  for (double ms : outcome.inter_token_ms) itl_.Add(ms);
  e2e_.Add(absl::ToDoubleMilliseconds(outcome.end - outcome.start));
}

LoadgenResult LoadStats::Summarize() {
  LoadgenResult result = result_;
  result.time_to_first_token = ttft_.Summarize();
  result.inter_token = itl_.Summarize();
  result.end_to_end = e2e_.Summarize();
  return result;
}

}  // namespace int4kv
