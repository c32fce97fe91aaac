#include "common/exact_number.h"

#include <cmath>
#include <cstdlib>
#include <limits>

#include "gtest/gtest.h"

namespace int4kv {
namespace {

TEST(ExactNumberTest, ValuesJustPastALimitDoNotPrintAsTheLimit) {
  EXPECT_EQ(ExactNumber(std::nextafter(100.0f, 200.0f)), "100.00001");
  EXPECT_EQ(ExactNumber(std::nextafter(1.0f, 2.0f)), "1.0000001");
  EXPECT_EQ(ExactNumber(1000000.1), "1000000.1");
}

TEST(ExactNumberTest, PlainValuesStayShort) {
  EXPECT_EQ(ExactNumber(0.5f), "0.5");
  EXPECT_EQ(ExactNumber(100.0f), "100");
  EXPECT_EQ(ExactNumber(-2.0), "-2");
  EXPECT_EQ(ExactNumber(0.1), "0.1");
}

TEST(ExactNumberTest, TextReadsBackAsTheSameValue) {
  for (float v : {0.1f, 1.0f / 3.0f, 3.4028235e38f, 1e-45f, -7.25e-3f}) {
    EXPECT_EQ(std::strtof(ExactNumber(v).c_str(), nullptr), v) << ExactNumber(v);
  }
  for (double v : {0.1, 1.0 / 3.0, 1.7976931348623157e308, 5e-324}) {
    EXPECT_EQ(std::strtod(ExactNumber(v).c_str(), nullptr), v) << ExactNumber(v);
  }
}

TEST(ExactNumberTest, NonFiniteValues) {
  EXPECT_EQ(ExactNumber(std::numeric_limits<float>::infinity()), "inf");
  EXPECT_EQ(ExactNumber(-std::numeric_limits<double>::infinity()), "-inf");
  EXPECT_EQ(ExactNumber(std::numeric_limits<float>::quiet_NaN()), "nan");
}

}  // namespace
}  // namespace int4kv
