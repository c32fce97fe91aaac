#include "server/model_source.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace int4kv {
namespace {

using ::testing::HasSubstr;

TEST(ModelSourceTest, Presets) {
  absl::StatusOr<ModelSource> s = ParseModelSource("tiny");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->kind, ModelSource::Kind::kPreset);
  EXPECT_EQ(s->preset, "tiny");
  EXPECT_EQ(s->num_layers, 0);
  EXPECT_EQ(s->ToString(), "tiny");
  s = ParseModelSource("llama8b:2", 5);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->preset, "llama8b");
  EXPECT_EQ(s->num_layers, 2);
  EXPECT_EQ(s->seed, 5u);
  EXPECT_EQ(s->ToString(), "llama8b:2");
}

TEST(ModelSourceTest, Paths) {
  absl::StatusOr<ModelSource> s = ParseModelSource(kDefaultModelPath);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->kind, ModelSource::Kind::kCheckpoint);
  EXPECT_EQ(s->path, kDefaultModelPath);
  EXPECT_EQ(ParseModelSource("model.bin")->kind, ModelSource::Kind::kCheckpoint);
}

TEST(ModelSourceTest, Errors) {
  EXPECT_THAT(std::string(ParseModelSource("").status().message()), HasSubstr("empty"));
  EXPECT_THAT(std::string(ParseModelSource("llama8b:0").status().message()),
              HasSubstr("layer count '0' is invalid"));
  EXPECT_THAT(std::string(ParseModelSource("llama8b:x").status().message()),
              HasSubstr("layer count 'x'"));
  EXPECT_THAT(std::string(ParseModelSource("mistral").status().message()),
              HasSubstr("unknown model preset 'mistral'"));
}

TEST(ModelSourceTest, LoadsBoth) {
  absl::StatusOr<LlamaWeights> tiny = LoadModelWeights(*ParseModelSource("tiny:1", 3));
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_EQ(tiny->config.num_layers, 1);
  EXPECT_EQ(tiny->layers.size(), 1u);
  absl::StatusOr<LlamaWeights> stories = LoadModelWeights(*ParseModelSource(kDefaultModelPath));
  ASSERT_TRUE(stories.ok()) << stories.status();
  EXPECT_EQ(stories->config.vocab_size, 512);
  EXPECT_EQ(LoadModelWeights(*ParseModelSource("/missing.bin")).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace int4kv
