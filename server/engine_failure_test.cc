// The engine after failed model steps (stories260K with an attention that fails on demand):
// one failure ends its requests INTERNAL and the engine goes on; kFailedStepsToStop in a row
// stop it serving, end what is queued UNAVAILABLE and call the failure handler once.
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/engine.h"
#include "server/model_source.h"
#include "server/testing/test_util.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kStopped[] = "the engine stopped serving after 3 model steps in a row failed";

// Failure handler calls, recorded.
struct Failures {
  std::mutex mutex;
  std::vector<absl::Status> seen;

  std::function<void(const absl::Status&)> Handler() {
    return [this](const absl::Status& status) {
      std::lock_guard<std::mutex> lock(mutex);
      seen.push_back(status);
    };
  }
  std::vector<absl::Status> Seen() {
    std::lock_guard<std::mutex> lock(mutex);
    return seen;
  }
};

std::unique_ptr<Engine> FailingEngine(EngineConfig config, std::function<bool()> fail_now) {
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(
      config, Stories260K(), kDefaultModelPath, FailingInt4AttentionFactory(fail_now));
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? std::move(*engine) : nullptr;
}

TEST(EngineFailureTest, FailedStepsInARowStopTheEngine) {
  ASSERT_EQ(kFailedStepsToStop, 3);  // kStopped spells it out
  std::atomic<bool> fail{true};
  const std::unique_ptr<Engine> engine =
      FailingEngine(SmallConfig(), [&fail] { return fail.load(); });
  ASSERT_NE(engine, nullptr);
  Failures failures;
  engine->SetFailureHandler(failures.Handler());
  const GenerateRequest request = GreedyRequest({1, 403, 261}, 4);

  // Two failed steps, then one that succeeds: the streak starts over.
  for (int i = 0; i < 2; ++i) {
    const GenerationResult result = RunToEnd(*engine, request);
    EXPECT_EQ(result.finish_reason, FinishReason::kError);
    EXPECT_EQ(result.status.code(), absl::StatusCode::kInternal) << result.status;
  }
  fail = false;
  EXPECT_TRUE(RunToEnd(*engine, request).status.ok());
  fail = true;
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(RunToEnd(*engine, request).status.code(), absl::StatusCode::kInternal);
  }
  EXPECT_TRUE(failures.Seen().empty());
  EXPECT_TRUE(engine->GetInfo().failure.empty());

  // The third failure in a row stops it.
  EXPECT_EQ(RunToEnd(*engine, request).status.code(), absl::StatusCode::kInternal);
  const absl::StatusOr<std::shared_ptr<RequestStream>> refused = engine->Submit(request);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(refused.status().message()), StartsWith(kStopped));
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("injected attention failure"));
  const std::vector<absl::Status> seen = failures.Seen();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], refused.status());
  EXPECT_EQ(engine->GetInfo().failure, refused.status().message());
  EXPECT_EQ(engine->GetInfo().running, 0);
  EXPECT_EQ(engine->GetInfo().queued, 0);

  // A handler set afterwards hears of it at once; a working model step is not tried again.
  fail = false;
  Failures late;
  engine->SetFailureHandler(late.Handler());
  ASSERT_EQ(late.Seen().size(), 1u);
  EXPECT_EQ(late.Seen()[0], refused.status());
  EXPECT_EQ(engine->Submit(request).status(), refused.status());
  engine->Shutdown(absl::Seconds(5));
  EXPECT_EQ(failures.Seen().size(), 1u);
}

// Requests still queued when the engine stops end UNAVAILABLE with its message, without
// running; the requests of the failed steps end INTERNAL.
TEST(EngineFailureTest, QueuedRequestsEndUnavailableWhenTheEngineStops) {
  EngineConfig config = SmallConfig();
  config.max_batch = 1;  // one request a step: the first three fail, the others wait
  config.max_queue = 8;
  absl::Notification all_submitted;
  const std::unique_ptr<Engine> engine = FailingEngine(config, [&all_submitted] {
    all_submitted.WaitForNotification();
    return true;
  });
  ASSERT_NE(engine, nullptr);
  // Also on a failed assertion below, so that the scheduler thread is not left waiting.
  absl::Cleanup release_steps = [&all_submitted] {
    if (!all_submitted.HasBeenNotified()) all_submitted.Notify();
  };
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 5; ++i) {
    absl::StatusOr<std::shared_ptr<RequestStream>> stream =
        engine->Submit(GreedyRequest({1, 403, 261}, 4));
    ASSERT_TRUE(stream.ok()) << stream.status();
    streams.push_back(*stream);
  }
  std::move(release_steps).Invoke();
  for (int i = 0; i < 5; ++i) {
    const GenerationResult result = streams[i]->ReadAll();
    if (i < 3) {
      EXPECT_EQ(result.status.code(), absl::StatusCode::kInternal) << i << " " << result.status;
      EXPECT_EQ(result.finish_reason, FinishReason::kError);
    } else {
      EXPECT_EQ(result.status.code(), absl::StatusCode::kUnavailable) << i << " " << result.status;
      EXPECT_THAT(std::string(result.status.message()), StartsWith(kStopped));
      EXPECT_EQ(result.finish_reason, FinishReason::kCancelled);
      EXPECT_TRUE(result.tokens.empty());
    }
  }
  EXPECT_EQ(engine->GetInfo().queued, 0);
  EXPECT_EQ(engine->GetInfo().slots_free, engine->GetInfo().slots_total);
}

}  // namespace
}  // namespace int4kv
