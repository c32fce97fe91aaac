#include "tools/loadgen_report.h"

#include <cmath>
#include <cstdio>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace int4kv {
namespace {

std::string JsonString(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", static_cast<unsigned char>(c));
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string JsonNumber(double value) {
  return std::isfinite(value) ? absl::StrFormat("%.6g", value) : "null";
}

// Fields rendered in order as one JSON object.
class JsonObject {
 public:
  JsonObject& Raw(const std::string& key, const std::string& json) {
    fields_.push_back(absl::StrCat(JsonString(key), ": ", json));
    return *this;
  }
  JsonObject& Str(const std::string& key, const std::string& value) {
    return Raw(key, JsonString(value));
  }
  JsonObject& Num(const std::string& key, double value) { return Raw(key, JsonNumber(value)); }
  JsonObject& Int(const std::string& key, int64_t value) { return Raw(key, absl::StrCat(value)); }
  JsonObject& Bool(const std::string& key, bool value) {
    return Raw(key, value ? "true" : "false");
  }
  std::string Render() const { return absl::StrCat("{", absl::StrJoin(fields_, ", "), "}"); }

 private:
  std::vector<std::string> fields_;
};

// Without samples the statistics are null, not 0 ms.
std::string LatencyJson(const LatencySummary& s) {
  auto ms = [&s](double value) { return s.count > 0 ? value : NAN; };
  return JsonObject()
      .Int("count", s.count)
      .Num("mean", ms(s.mean_ms))
      .Num("p50", ms(s.p50_ms))
      .Num("p90", ms(s.p90_ms))
      .Num("p99", ms(s.p99_ms))
      .Num("max", ms(s.max_ms))
      .Int("percentile_samples", s.percentile_samples)
      .Render();
}

std::string LatencyLine(const char* name, const LatencySummary& s) {
  if (s.count == 0) return absl::StrFormat("  %-22s n/a (0 samples)\n", name);
  const std::string sampled =
      s.percentile_samples < s.count
          ? absl::StrFormat("; percentiles of a uniform %d", s.percentile_samples)
          : "";
  return absl::StrFormat("  %-22s p50 %9.2f  p90 %9.2f  p99 %9.2f  max %9.2f  (%d samples%s)\n",
                         name, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms, s.count, sampled);
}

std::string ShapeText(const LoadgenConfig& config) {
  return config.open_loop()
             ? absl::StrFormat("open loop, Poisson arrivals at %.10g req/s (at most %d in flight)",
                               config.rate, config.max_in_flight)
             : absl::StrFormat("closed loop, %d concurrent streams", config.concurrency);
}

}  // namespace

std::string FormatTextReport(const LoadgenConfig& config, const v1::ServerInfo& info,
                             const LoadgenResult& result) {
  std::string out;
  absl::StrAppend(&out, "int4kv_loadgen: ", config.target, " (", info.backend().backend(), ", ",
                  info.model().source(), ", max_batch ", info.capacity().max_batch(),
                  ", max_queue ", info.capacity().max_queue(), ")\n");
  absl::StrAppend(
      &out, "  traffic: ", ShapeText(config), "; prompt_len ", config.prompt_len.ToString(),
      ", output_len ", config.output_len.ToString(),
      config.temperature > 0 ? absl::StrCat(", temperature ", config.temperature) : ", greedy",
      "\n");
  absl::StrAppend(
      &out,
      absl::StrFormat("  requests: %d sent, %d ok, %d failed", result.sent, result.ok,
                      result.failed),
      config.open_loop() ? absl::StrCat(", ", result.not_sent, " not sent") : "",
      absl::StrFormat("; peak in flight %d; %.2f s", result.peak_in_flight, result.wall_seconds),
      config.open_loop() ? absl::StrFormat("; sender lag max %.2f ms", result.max_send_lag_ms) : "",
      "\n");
  absl::StrAppend(
      &out, absl::StrFormat("  throughput: %.2f requests/s, %.1f output tokens/s (OK requests)\n",
                            result.requests_per_second(), result.output_tokens_per_second()));
  out += "  latency (ms):\n";
  out += LatencyLine("time to first token", result.time_to_first_token);
  out += LatencyLine("inter-token", result.inter_token);
  out += LatencyLine("end to end", result.end_to_end);
  if (!config.open_loop() && config.duration > absl::ZeroDuration() &&
      result.end_to_end.count > 0 &&
      result.end_to_end.p50_ms > absl::ToDoubleMilliseconds(config.duration)) {
    absl::StrAppend(&out,
                    "  note: the median request outlasted --duration, so these figures describe "
                    "about one wave of ",
                    config.concurrency,
                    " simultaneous requests and its drain, not a steady load (give a longer "
                    "--duration or --num_requests)\n");
  }
  if (result.errors_by_code.empty()) {
    out += "  errors: none\n";
  } else {
    out += "  errors by status code:\n";
    for (const auto& [code, count] : result.errors_by_code) {
      absl::StrAppend(&out, absl::StrFormat("    %-20s %8d  e.g. \"%s\"\n", code, count,
                                            result.error_examples.at(code)));
    }
  }
  if (result.stopped_sending) {
    absl::StrAppend(&out, "  SERVER LOST: sending stopped after ", kServerLostAfterUnavailable,
                    " requests in a row ended UNAVAILABLE\n");
  } else if (result.unavailable_at_end > 0) {
    absl::StrAppend(&out, "  SERVER LOST: the run ended with ", result.unavailable_at_end,
                    " requests in a row UNAVAILABLE\n");
  }
  if (result.bad_responses > 0) {
    absl::StrAppend(&out, "  BAD RESPONSES: ", result.bad_responses,
                    " OK streams broke the API (finish reason, usage or token ids)\n");
  }
  return out;
}

std::string FormatJsonReport(const LoadgenConfig& config, const v1::ServerInfo& info,
                             const LoadgenResult& result) {
  const std::string config_json =
      JsonObject()
          .Str("server", config.target)
          .Str("mode", config.open_loop() ? "open" : "closed")
          .Int("concurrency", config.open_loop() ? 0 : config.concurrency)
          .Num("rate", config.rate)
          .Int("max_in_flight", config.open_loop() ? config.max_in_flight : 0)
          .Int("num_requests", config.num_requests)
          .Num("duration_s", absl::ToDoubleSeconds(config.duration))
          .Str("prompt_len", config.prompt_len.ToString())
          .Str("output_len", config.output_len.ToString())
          .Num("temperature", config.temperature)
          .Bool("ignore_eos", config.ignore_eos)
          .Int("channels", config.channels)
          .Str("seed", absl::StrCat(config.seed))
          .Render();
  const std::string server_json = JsonObject()
                                      .Str("version", info.version())
                                      .Str("backend", info.backend().backend())
                                      .Str("device", info.backend().device_name())
                                      .Str("model", info.model().source())
                                      .Int("vocab_size", info.model().vocab_size())
                                      .Int("max_batch", info.capacity().max_batch())
                                      .Int("max_queue", info.capacity().max_queue())
                                      .Int("max_seq_len", info.capacity().max_seq_len())
                                      .Int("kv_slots_total", info.capacity().slots_total())
                                      .Render();
  JsonObject errors;
  for (const auto& [code, count] : result.errors_by_code) errors.Int(code, count);
  JsonObject examples;
  for (const auto& [code, message] : result.error_examples) examples.Str(code, message);
  const std::string results_json =
      JsonObject()
          .Num("wall_s", result.wall_seconds)
          .Int("sent", result.sent)
          .Int("ok", result.ok)
          .Int("failed", result.failed)
          .Int("not_sent", result.not_sent)
          .Int("bad_responses", result.bad_responses)
          .Raw("server_lost", result.server_lost() ? "true" : "false")
          .Int("unavailable_at_end", result.unavailable_at_end)
          .Int("peak_in_flight", result.peak_in_flight)
          .Num("max_send_lag_ms", config.open_loop() ? result.max_send_lag_ms : NAN)
          .Int("output_tokens", result.output_tokens)
          .Num("requests_per_s", result.requests_per_second())
          .Num("output_tokens_per_s", result.output_tokens_per_second())
          .Raw("ttft_ms", LatencyJson(result.time_to_first_token))
          .Raw("itl_ms", LatencyJson(result.inter_token))
          .Raw("e2e_ms", LatencyJson(result.end_to_end))
          .Raw("errors_by_code", errors.Render())
          .Raw("error_examples", examples.Render())
          .Render();
  return JsonObject()
             .Raw("config", config_json)
             .Raw("server", server_json)
             .Raw("results", results_json)
             .Render() +
         "\n";
}

}  // namespace int4kv
