#include "server/request_stream.h"

#include <chrono>
#include <thread>

#include "gtest/gtest.h"

namespace int4kv {
namespace {

TEST(RequestStreamTest, DeliversInOrderAcrossThreads) {
  RequestStream stream(7);
  EXPECT_EQ(stream.id(), 7u);
  std::thread producer([&] {
    for (int i = 0; i < 1000; ++i) stream.PushToken(i);
    Usage usage;
    usage.generated_tokens = 1000;
    stream.Finish(FinishReason::kLength, absl::OkStatus(), usage);
    stream.PushToken(5000);  // dropped: after the finish
    stream.Finish(FinishReason::kError, absl::InternalError("x"), Usage());  // dropped
  });
  const GenerationResult result = stream.ReadAll();
  producer.join();
  ASSERT_EQ(result.tokens.size(), 1000u);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(result.tokens[i], i);
  EXPECT_EQ(result.finish_reason, FinishReason::kLength);
  EXPECT_TRUE(result.status.ok());
  EXPECT_EQ(result.usage.generated_tokens, 1000);
  EXPECT_TRUE(stream.done());
  StreamEvent event;
  EXPECT_FALSE(stream.Next(&event));  // nothing after the finish
}

TEST(RequestStreamTest, NextForTimesOut) {
  RequestStream stream(1);
  StreamEvent event;
  EXPECT_FALSE(stream.NextFor(&event, absl::Milliseconds(5)));
  EXPECT_FALSE(stream.done());
  stream.PushToken(3);
  ASSERT_TRUE(stream.NextFor(&event, absl::Milliseconds(5)));
  EXPECT_EQ(event.type, StreamEvent::Type::kToken);
  EXPECT_EQ(event.token, 3);
  stream.Finish(FinishReason::kCancelled, absl::CancelledError("c"), Usage());
  EXPECT_TRUE(stream.finished());
  ASSERT_TRUE(stream.NextFor(&event, absl::Milliseconds(5)));
  EXPECT_EQ(event.type, StreamEvent::Type::kFinish);
  EXPECT_EQ(event.finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(event.status.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(stream.done());
}

// An infinite timeout waits for the event (before, wait_for's now() + timeout overflowed the
// clock and NextFor returned false at once); so does a timeout of centuries.
TEST(RequestStreamTest, NextForAnInfiniteTimeoutWaitsForALateEvent) {
  for (const absl::Duration timeout : {absl::InfiniteDuration(), absl::Hours(24 * 365 * 300)}) {
    RequestStream stream(2);
    std::thread producer([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      stream.PushToken(11);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      stream.Finish(FinishReason::kLength, absl::OkStatus(), Usage());
    });
    StreamEvent event;
    ASSERT_TRUE(stream.NextFor(&event, timeout)) << timeout;
    EXPECT_EQ(event.type, StreamEvent::Type::kToken);
    EXPECT_EQ(event.token, 11);
    ASSERT_TRUE(stream.NextFor(&event, timeout)) << timeout;
    EXPECT_EQ(event.type, StreamEvent::Type::kFinish);
    EXPECT_TRUE(stream.done());
    EXPECT_FALSE(stream.NextFor(&event, timeout));  // nothing after the finish
    producer.join();
  }
}

}  // namespace
}  // namespace int4kv
