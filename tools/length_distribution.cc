#include "tools/length_distribution.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace int4kv {

absl::StatusOr<LengthDistribution> LengthDistribution::Parse(absl::string_view flag,
                                                             absl::string_view text) {
  auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, " = '", text, "' is invalid: ", why,
        " (a token count N, or A-B for uniform counts from A to B, with 1 <= A <= B)"));
  };
  const std::vector<absl::string_view> parts =
      absl::StrSplit(absl::StripAsciiWhitespace(text), '-');
  if (parts.size() > 2) return invalid("more than one '-'");
  LengthDistribution distribution;
  // SimpleAtoi also fails on numbers past int32.
  if (!absl::SimpleAtoi(parts[0], &distribution.min)) return invalid("not a count up to 2^31 - 1");
  distribution.max = distribution.min;
  if (parts.size() == 2 && !absl::SimpleAtoi(parts[1], &distribution.max)) {
    return invalid("the upper bound is not a count up to 2^31 - 1");
  }
  if (distribution.min < 1) return invalid("counts must be at least 1");
  if (distribution.max < distribution.min) return invalid("B is below A");
  return distribution;
}

int32_t LengthDistribution::Sample(std::mt19937_64& rng) const {
  if (min == max) return min;
  return std::uniform_int_distribution<int32_t>(min, max)(rng);
}

std::string LengthDistribution::ToString() const {
  return fixed() ? absl::StrCat(min) : absl::StrCat(min, "-", max);
}

}  // namespace int4kv
