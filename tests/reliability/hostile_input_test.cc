// Hostile input: more than 10,000 generated requests with random and extreme values in every
// field (zero, negative and huge max_new_tokens; negative and out-of-range ids; prompts at and
// past max_seq_len; NaN, infinite, negative and huge sampling values; long and unprintable
// request ids; too many stop ids) plus messages at and past gRPC's 4 MiB limit, sent
// concurrently over several connections. Each gets the documented answer (see
// hostile_requests.h): INVALID_ARGUMENT naming a broken field and its limit, RESOURCE_EXHAUSTED
// from gRPC for an oversized message, or a correct result for a valid request. Rejected
// requests never reach the engine (its step count does not move), and afterwards the server's
// counts equal those before and a reference request gives the same greedy tokens as before.
#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/stubs/logging.h"
#include "gtest/gtest.h"
#include "tests/reliability/hostile_requests.h"
#include "tests/reliability/reliability_testing.h"
#include "tests/testing/generate_call.h"

namespace int4kv {
namespace {

constexpr int kCases = 10400;

// The client's protobuf logs an error for every non-UTF-8 request_id it serializes (this
// suite sends them on purpose); those lines are dropped, everything else goes to stderr.
// Installed before any thread starts.
void QuietUtf8Log(google::protobuf::LogLevel level, const char* filename, int line,
                  const std::string& message) {
  if (absl::StrContains(message, "invalid UTF-8 data when serializing")) return;
  std::fprintf(stderr, "[libprotobuf %d %s:%d] %s\n", static_cast<int>(level), filename, line,
               message.c_str());
}
constexpr int kThreads = 8;
constexpr int kGrpcMaxMessageBytes = 4 * 1024 * 1024;  // gRPC's default receive limit

// Empty if `call` is the documented answer to `request`, else what is wrong.
std::string CheckAnswer(const v1::GenerateRequest& request, const GenerateCall& call,
                        const RequestRules& rules, int32_t eos_token) {
  if (!IsUtf8(request.request_id())) {
    // protobuf's parser refuses the message before the service runs: gRPC answers INTERNAL
    // with an empty message (a known gap, docs/RELIABILITY.md); INVALID_ARGUMENT naming
    // request_id is what the API promises for a non-printable request_id.
    const bool documented = call.status.error_code() == grpc::StatusCode::INVALID_ARGUMENT &&
                            absl::StartsWith(call.status.error_message(), "request_id");
    const bool parser = call.status.error_code() == grpc::StatusCode::INTERNAL;
    if ((!documented && !parser) || !call.tokens.empty()) {
      return absl::StrCat("a non-UTF-8 request_id got ", StatusText(call.status));
    }
    return "";
  }
  const std::vector<Defect> defects = FindDefects(request, rules);
  if (!defects.empty()) {
    if (call.status.error_code() != grpc::StatusCode::INVALID_ARGUMENT) {
      return absl::StrCat("expected INVALID_ARGUMENT (", defects[0].prefix, "...), got ",
                          StatusText(call.status));
    }
    if (!call.tokens.empty()) return "a rejected request streamed tokens";
    const std::string& message = call.status.error_message();
    for (const Defect& d : defects) {
      if (absl::StartsWith(message, d.prefix) && absl::StrContains(message, d.limit)) return "";
    }
    std::string wanted;
    for (const Defect& d : defects) absl::StrAppend(&wanted, " | '", d.prefix, "...", d.limit, "'");
    return absl::StrCat("the message names no broken field with its limit: '", message,
                        "'; broken:", wanted);
  }
  if (!call.status.ok()) return absl::StrCat("a valid request failed: ", StatusText(call.status));
  const v1::GenerateResponse& last = call.last();
  if (last.request_id() != request.request_id()) return "request_id not echoed";
  if (static_cast<int32_t>(call.tokens.size()) > request.max_new_tokens()) {
    return "more tokens than max_new_tokens";
  }
  for (const int32_t token : call.tokens) {
    if (token < 0 || token >= rules.vocab_size) return absl::StrCat("token ", token, " invalid");
  }
  if (last.usage().generated_tokens() != static_cast<int32_t>(call.tokens.size())) {
    return "usage.generated_tokens disagrees with the stream";
  }
  if (last.usage().prompt_tokens() != request.prompt_size()) return "usage.prompt_tokens wrong";
  const std::set<int32_t> stops(request.sampling().stop_token_ids().begin(),
                                request.sampling().stop_token_ids().end());
  switch (last.finish_reason()) {
    case v1::FINISH_REASON_LENGTH:
      if (static_cast<int32_t>(call.tokens.size()) != request.max_new_tokens()) {
        return "LENGTH before max_new_tokens";
      }
      return "";
    case v1::FINISH_REASON_STOP:
      if (call.tokens.empty() || stops.count(call.tokens.back()) == 0) {
        return "STOP without a stop token last";
      }
      return "";
    case v1::FINISH_REASON_EOS:
      if (request.sampling().ignore_eos() || call.tokens.empty() ||
          call.tokens.back() != eos_token) {
        return "EOS without the EOS token last, or with ignore_eos";
      }
      return "";
    default:
      return "no finish reason";
  }
}

class HostileInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    google::protobuf::SetLogHandler(&QuietUtf8Log);
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        StartServing({"--max_batch=8", "--max_queue=64", "--log_level=error"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    channels_ = OpenChannels(server_->address(), 4);
    for (const auto& channel : channels_) stubs_.push_back(v1::TokenGeneration::NewStub(channel));
    const v1::ServerInfo info = GetInfo(*stubs_[0]);
    rules_ = {info.model().vocab_size(), info.capacity().max_seq_len(),
              info.capacity().max_new_tokens(), info.capacity().slots_total()};
    eos_token_ = info.model().eos_token();
    reference_ = GreedyRequest({1, 50, 300, 7, 511, 0}, 24);
    reference_tokens_ = RunGenerate(*stubs_[0], reference_).tokens;
    ASSERT_EQ(reference_tokens_.size(), 24u);
    before_ = WaitUntilIdle(*stubs_[0]);
    ASSERT_TRUE(before_.idle()) << before_;
  }

  int64_t EngineSteps() { return GetInfo(*stubs_[0]).capacity().engine_steps(); }

  // Sends every case on kThreads threads over the channels; returns the failures' count.
  int SendAll(const std::vector<HostileCase>& cases, std::map<std::string, int>* tally) {
    std::mutex mutex;
    std::atomic<int> failures{0};
    RunParallel(static_cast<int>(cases.size()), kThreads, [&](int i) {
      const GenerateCall call =
          RunGenerate(*stubs_[i % stubs_.size()], cases[i].request, absl::Seconds(60));
      std::string wrong = CheckAnswer(cases[i].request, call, rules_, eos_token_);
      if (wrong.empty() && cases[i].kind == "reference" && call.tokens != reference_tokens_) {
        wrong = "the reference request's greedy tokens changed";
      }
      std::lock_guard<std::mutex> lock(mutex);
      ++(*tally)[cases[i].kind];
      if (!wrong.empty() && failures.fetch_add(1) < 20) {
        ADD_FAILURE() << "case " << i << " (" << cases[i].kind << "): " << wrong;
      }
    });
    return failures.load();
  }

  std::unique_ptr<ServerProcess> server_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<v1::TokenGeneration::Stub>> stubs_;
  RequestRules rules_;
  int32_t eos_token_ = 0;
  CapacityCounts before_;
  v1::GenerateRequest reference_;
  std::vector<int32_t> reference_tokens_;
};

TEST_F(HostileInputTest, GeneratedRequestsGetTheDocumentedAnswerAndChangeNothing) {
  HostileRequestGenerator generator(rules_, 20261125);
  std::vector<HostileCase> invalid;
  std::vector<HostileCase> valid;
  // A valid prompt near max_seq_len costs seconds on the CPU backend (prefill is quadratic in
  // a debug build), so only a few are sent; others drawn are replaced by new draws.
  const int max_long_valid = Scaled(4, 2);
  int long_valid = 0;
  for (int i = 0; static_cast<int>(invalid.size() + valid.size()) < kCases; ++i) {
    const uint64_t pick = i % 20;
    HostileCase c = pick < 11   ? generator.OneDefect()
                    : pick < 17 ? generator.AllRandom()
                                : generator.EdgeValid();
    if (!FindDefects(c.request, rules_).empty()) {
      invalid.push_back(std::move(c));
    } else if (c.request.prompt_size() <= 64 || long_valid++ < max_long_valid) {
      valid.push_back(std::move(c));
    }
  }
  ASSERT_GE(invalid.size() + valid.size(), 10000u);
  ASSERT_GE(valid.size(), 500u);

  // Rejections first: none may reach the engine.
  const int64_t steps_before = EngineSteps();
  std::map<std::string, int> tally;
  const absl::Time start = absl::Now();
  EXPECT_EQ(SendAll(invalid, &tally), 0);
  const absl::Duration invalid_time = absl::Now() - start;
  EXPECT_EQ(EngineSteps(), steps_before) << "a rejected request ran in the engine";
  EXPECT_EQ(CapacityCounts::From(GetInfo(*stubs_[0])), before_);

  // Valid requests at the edges, with the reference among them every 200.
  for (size_t i = 0; i < valid.size(); i += 200) {
    valid.insert(valid.begin() + i, HostileCase{"reference", reference_});
  }
  EXPECT_EQ(SendAll(valid, &tally), 0);
  const absl::Duration valid_time = absl::Now() - start - invalid_time;

  for (const auto& [kind, count] : tally) std::printf("  %6d  %s\n", count, kind.c_str());
  std::printf("hostile input: %zu requests: %zu rejected (%.1f s), %zu valid (%.1f s)\n",
              invalid.size() + valid.size(), invalid.size(), absl::ToDoubleSeconds(invalid_time),
              valid.size(), absl::ToDoubleSeconds(valid_time));

  EXPECT_EQ(WaitUntilIdle(*stubs_[0]), before_);
  EXPECT_EQ(RunGenerate(*stubs_[0], reference_).tokens, reference_tokens_);
  ExpectServingThenCleanStop(*server_);
}

TEST_F(HostileInputTest, MessagesAtAndPastTheGrpcSizeLimit) {
  const int64_t steps_before = EngineSteps();
  struct Big {
    const char* what;
    v1::GenerateRequest request;
    grpc::StatusCode code;
    const char* message;  // a substring of the status message
  };
  std::vector<Big> cases;
  auto prompt_of = [](int n, int32_t id) {
    v1::GenerateRequest r;
    r.mutable_prompt()->Resize(n, id);
    r.set_max_new_tokens(1);
    return r;
  };
  // Packed varints: ids below 128 take one byte, 128..16383 two.
  cases.push_back({"1-byte ids just under the limit", prompt_of(kGrpcMaxMessageBytes - 64, 1),
                   grpc::StatusCode::INVALID_ARGUMENT, "exceeds max_seq_len (512)"});
  cases.push_back({"2-byte ids just under the limit", prompt_of(kGrpcMaxMessageBytes / 2 - 64, 300),
                   grpc::StatusCode::INVALID_ARGUMENT, "exceeds max_seq_len (512)"});
  cases.push_back({"ids just past the limit", prompt_of(kGrpcMaxMessageBytes + 64, 1),
                   grpc::StatusCode::RESOURCE_EXHAUSTED, "larger than max"});
  {
    v1::GenerateRequest r = prompt_of(1, 1);
    r.set_request_id(std::string(kGrpcMaxMessageBytes - 100, 'a'));
    cases.push_back({"request_id just under the limit", r, grpc::StatusCode::INVALID_ARGUMENT,
                     "request_id has 4194204 bytes: at most 128"});
    r.set_request_id(std::string(kGrpcMaxMessageBytes + 100, 'a'));
    cases.push_back(
        {"request_id past the limit", r, grpc::StatusCode::RESOURCE_EXHAUSTED, "larger than max"});
  }
  {
    v1::GenerateRequest r = prompt_of(1, 1);
    r.mutable_sampling()->mutable_stop_token_ids()->Resize(kGrpcMaxMessageBytes - 100, 5);
    cases.push_back({"stop ids just under the limit", r, grpc::StatusCode::INVALID_ARGUMENT,
                     "sampling.stop_token_ids has 4194204 entries: at most 64"});
  }
  std::vector<GenerateCall> calls(cases.size());
  RunParallel(static_cast<int>(cases.size()), 3, [&](int i) {
    calls[i] = RunGenerate(*stubs_[i % stubs_.size()], cases[i].request, absl::Seconds(60));
  });
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(calls[i].status.error_code(), cases[i].code)
        << cases[i].what << " (" << cases[i].request.ByteSizeLong()
        << " bytes): " << StatusText(calls[i].status);
    EXPECT_TRUE(absl::StrContains(calls[i].status.error_message(), cases[i].message))
        << cases[i].what << ": " << StatusText(calls[i].status);
  }
  EXPECT_EQ(EngineSteps(), steps_before);
  EXPECT_EQ(WaitUntilIdle(*stubs_[0]), before_);
  EXPECT_EQ(RunGenerate(*stubs_[0], reference_).tokens, reference_tokens_);
}

}  // namespace
}  // namespace int4kv
