#include "tests/reliability/reliability_testing.h"

#include <signal.h>

#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/grpc_status.h"
#include "tests/testing/generate_call.h"

namespace int4kv {

absl::StatusOr<std::unique_ptr<ServerProcess>> StartServing(const std::vector<std::string>& args) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> process = ServerProcess::Start(args);
  if (!process.ok()) return process.status();
  if (!WaitForHealth((*process)->Channel(), grpc::health::v1::HealthCheckResponse::SERVING,
                     absl::Seconds(60))) {
    return absl::FailedPreconditionError(
        absl::StrCat("int4kv_server did not turn SERVING within 60 s:\n", (*process)->Log()));
  }
  return process;
}

void ExpectServingThenCleanStop(ServerProcess& server, absl::Duration timeout) {
  EXPECT_FALSE(server.Exited()) << server.Log();
  EXPECT_TRUE(WaitForHealth(server.Channel(), grpc::health::v1::HealthCheckResponse::SERVING,
                            absl::Seconds(5)))
      << server.Log();
  server.Signal(SIGTERM);
  EXPECT_EQ(server.Wait(timeout), 0) << server.Log();
}

std::vector<std::shared_ptr<grpc::Channel>> OpenChannels(const std::string& address, int count) {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < count; ++i) {
    grpc::ChannelArguments arguments;
    arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    channels.push_back(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), arguments));
  }
  return channels;
}

CapacityCounts CapacityCounts::From(const v1::ServerInfo& info) {
  const v1::CapacityInfo& c = info.capacity();
  CapacityCounts counts;
  counts.slots_total = c.slots_total();
  counts.slots_free = c.slots_free();
  counts.running = c.running();
  counts.queued = c.queued();
  counts.max_batch = c.max_batch();
  counts.max_queue = c.max_queue();
  counts.max_seq_len = c.max_seq_len();
  counts.max_new_tokens = c.max_new_tokens();
  counts.draining = c.draining();
  return counts;
}

bool CapacityCounts::operator==(const CapacityCounts& o) const {
  return slots_total == o.slots_total && slots_free == o.slots_free && running == o.running &&
         queued == o.queued && max_batch == o.max_batch && max_queue == o.max_queue &&
         max_seq_len == o.max_seq_len && max_new_tokens == o.max_new_tokens &&
         draining == o.draining;
}

std::ostream& operator<<(std::ostream& os, const CapacityCounts& c) {
  return os << "{slots " << c.slots_free << " free of " << c.slots_total << ", running "
            << c.running << ", queued " << c.queued << ", max_batch " << c.max_batch
            << ", max_queue " << c.max_queue << ", max_seq_len " << c.max_seq_len
            << ", max_new_tokens " << c.max_new_tokens << (c.draining ? ", draining" : "") << "}";
}

CapacityCounts WaitUntilIdle(v1::TokenGeneration::Stub& stub, absl::Duration timeout) {
  CapacityCounts counts;
  WaitFor(
      [&] {
        counts = CapacityCounts::From(GetInfo(stub));
        return counts.idle();
      },
      timeout);
  return counts;
}

v1::GenerateRequest RandomGreedyRequest(std::mt19937_64& rng, int32_t vocab_size,
                                        int32_t prompt_len, int32_t max_new_tokens) {
  std::vector<int32_t> prompt = {1};
  std::uniform_int_distribution<int32_t> token(0, vocab_size - 1);
  while (static_cast<int32_t>(prompt.size()) < prompt_len) prompt.push_back(token(rng));
  return GreedyRequest(prompt, max_new_tokens);
}

std::vector<std::vector<int32_t>> IdleOutputs(v1::TokenGeneration::Stub& stub,
                                              const std::vector<v1::GenerateRequest>& requests) {
  std::vector<std::vector<int32_t>> outputs;
  for (const v1::GenerateRequest& request : requests) {
    const GenerateCall call = RunGenerate(stub, request, absl::Seconds(120));
    EXPECT_TRUE(call.status.ok()) << StatusText(call.status);
    EXPECT_EQ(call.tokens.size(), static_cast<size_t>(request.max_new_tokens()));
    outputs.push_back(call.tokens);
  }
  return outputs;
}

bool IsPrefix(const std::vector<int32_t>& tokens, const std::vector<int32_t>& expected) {
  return tokens.size() <= expected.size() &&
         std::equal(tokens.begin(), tokens.end(), expected.begin());
}

std::string StatusText(const grpc::Status& status) {
  return absl::StrCat(GrpcCodeName(status.error_code()), ": ", status.error_message());
}

void RunParallel(int count, int threads, const std::function<void(int)>& body) {
  std::atomic<int> next{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      for (int i = next.fetch_add(1); i < count; i = next.fetch_add(1)) body(i);
    });
  }
  for (std::thread& worker : workers) worker.join();
}

}  // namespace int4kv
