#include "tests/testing/generate_call.h"

#include <chrono>
#include <memory>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace int4kv {

v1::GenerateRequest GreedyRequest(const std::vector<int32_t>& prompt, int32_t max_new_tokens) {
  v1::GenerateRequest request;
  for (int32_t id : prompt) request.add_prompt(id);
  request.set_max_new_tokens(max_new_tokens);
  request.mutable_sampling()->set_ignore_eos(true);
  return request;
}

const v1::GenerateResponse& GenerateCall::last() const {
  static const v1::GenerateResponse* const kEmpty = new v1::GenerateResponse();
  return responses.empty() ? *kEmpty : responses.back();
}

GenerateCall RunGenerate(v1::TokenGeneration::Stub& stub, const v1::GenerateRequest& request,
                         absl::Duration deadline, const std::string& token) {
  GenerateCall call;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(deadline));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub.Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    call.arrivals.push_back(absl::Now());
    call.tokens.insert(call.tokens.end(), response.token_ids().begin(), response.token_ids().end());
    call.responses.push_back(response);
  }
  call.status = reader->Finish();
  return call;
}

v1::ServerInfo GetInfo(v1::TokenGeneration::Stub& stub, const std::string& token) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  v1::ServerInfo info;
  const grpc::Status status = stub.GetServerInfo(&context, v1::GetServerInfoRequest(), &info);
  EXPECT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
  return info;
}

v1::ServerInfo WaitForIdle(v1::TokenGeneration::Stub& stub) {
  v1::ServerInfo info;
  const bool idle = WaitFor([&] {
    info = GetInfo(stub);
    const v1::CapacityInfo& c = info.capacity();
    return c.running() == 0 && c.queued() == 0 && c.slots_free() == c.slots_total();
  });
  EXPECT_TRUE(idle) << "not idle after 10 s: " << info.capacity().DebugString();
  return info;
}

bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  while (true) {
    if (condition()) return true;
    if (absl::Now() >= end) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
}

}  // namespace int4kv
