#include "tools/loadgen_config.h"

#include "absl/strings/str_cat.h"
#include "common/exact_number.h"

namespace int4kv {

absl::Status ValidateConfig(const LoadgenConfig& config) {
  if (config.target.empty()) return absl::InvalidArgumentError("--server is required");
  if (!(config.rate == 0 || (config.rate >= kMinLoadgenRate && config.rate <= kMaxLoadgenRate))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--rate = ", ExactNumber(config.rate), " is invalid: must be 0 (closed loop) or in [",
        kMinLoadgenRate, ", ", kMaxLoadgenRate, "] requests per second"));
  }
  if (!config.open_loop() && (config.concurrency < 1 || config.concurrency > kMaxLoadgenStreams)) {
    return absl::InvalidArgumentError(absl::StrCat("--concurrency = ", config.concurrency,
                                                   " is invalid: must be in [1, ",
                                                   kMaxLoadgenStreams, "]"));
  }
  if (config.open_loop() &&
      (config.max_in_flight < 1 || config.max_in_flight > kMaxLoadgenStreams)) {
    return absl::InvalidArgumentError(absl::StrCat("--max_in_flight = ", config.max_in_flight,
                                                   " is invalid: must be in [1, ",
                                                   kMaxLoadgenStreams, "]"));
  }
  if (config.num_requests < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--num_requests = ", config.num_requests,
                                                   " is invalid: must be >= 0 (0: no limit)"));
  }
  if (config.duration < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--duration = ", absl::FormatDuration(config.duration),
                     " is invalid: must be >= 0 (0: no limit)"));
  }
  if (config.num_requests == 0 && config.duration == absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "--num_requests and --duration are both 0: set at least one bound on the run");
  }
  if (!(config.temperature >= 0 && config.temperature <= 100)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--temperature = ", ExactNumber(config.temperature), " is invalid: must be in [0, 100]"));
  }
  if (config.channels < 1 || config.channels > kMaxLoadgenChannels) {
    return absl::InvalidArgumentError(absl::StrCat("--channels = ", config.channels,
                                                   " is invalid: must be in [1, ",
                                                   kMaxLoadgenChannels, "]"));
  }
  if (config.deadline <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--deadline = ", absl::FormatDuration(config.deadline), " is invalid: must be > 0"));
  }
  if (config.connect_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--connect_timeout = ", absl::FormatDuration(config.connect_timeout),
                     " is invalid: must be > 0"));
  }
  if (config.progress_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--progress_interval = ", absl::FormatDuration(config.progress_interval),
                     " is invalid: must be >= 0 (0: no progress)"));
  }
  return absl::OkStatus();
}

absl::Status CheckAgainstServer(const LoadgenConfig& config, const v1::ServerInfo& info) {
  const v1::CapacityInfo& capacity = info.capacity();
  if (info.model().vocab_size() < 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the server reports vocab_size = ", info.model().vocab_size(), ": no valid token ids"));
  }
  if (config.output_len.max > capacity.max_new_tokens()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--output_len = '", config.output_len.ToString(),
                     "' is invalid for this server: ", config.output_len.max,
                     " exceeds its max_new_tokens limit (", capacity.max_new_tokens(), ")"));
  }
  const int64_t longest = static_cast<int64_t>(config.prompt_len.max) + config.output_len.max;
  if (longest > capacity.max_seq_len()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--prompt_len = '", config.prompt_len.ToString(), "' and --output_len = '",
        config.output_len.ToString(), "' are invalid for this server: the longest request (",
        longest, " tokens) exceeds its max_seq_len (", capacity.max_seq_len(), ")"));
  }
  if (longest > capacity.slots_total()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--prompt_len = '", config.prompt_len.ToString(), "' and --output_len = '",
        config.output_len.ToString(), "' are invalid for this server: the longest request (",
        longest, " tokens) exceeds its KV cache capacity (", capacity.slots_total(),
        " token slots)"));
  }
  return absl::OkStatus();
}

std::string OverloadWarning(const LoadgenConfig& config, const v1::ServerInfo& info) {
  const int64_t takes =
      static_cast<int64_t>(info.capacity().max_batch()) + info.capacity().max_queue();
  const int32_t streams = config.open_loop() ? config.max_in_flight : config.concurrency;
  if (streams <= takes) return "";
  return absl::StrCat(config.open_loop() ? "--max_in_flight = " : "--concurrency = ", streams,
                      " exceeds what the server takes at once (max_batch + max_queue = ", takes,
                      "): the requests beyond it end RESOURCE_EXHAUSTED",
                      config.open_loop()
                          ? ""
                          : " and their streams wait for another request to finish before "
                            "sending again",
                      ", and the figures include that traffic");
}

}  // namespace int4kv
