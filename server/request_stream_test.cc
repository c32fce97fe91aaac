#include "server/request_stream.h"

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

}  // namespace
}  // namespace int4kv
