// A distribution of token counts for the load generator's prompts and outputs, parsed from a
// flag: "N" (always N) or "A-B" (uniform over the integers A..B, both included).
#ifndef INT4KV_TOOLS_LENGTH_DISTRIBUTION_H_
#define INT4KV_TOOLS_LENGTH_DISTRIBUTION_H_

#include <cstdint>
#include <random>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace int4kv {

struct LengthDistribution {
  int32_t min = 1;  // >= 1
  int32_t max = 1;  // >= min

  // InvalidArgument naming `flag` for anything but "N" or "A-B" with 1 <= A <= B.
  static absl::StatusOr<LengthDistribution> Parse(absl::string_view flag, absl::string_view text);

  bool fixed() const { return min == max; }
  int32_t Sample(std::mt19937_64& rng) const;
  double Mean() const { return 0.5 * (static_cast<double>(min) + max); }
  std::string ToString() const;  // "N" or "A-B", as parsed
};

}  // namespace int4kv

#endif  // INT4KV_TOOLS_LENGTH_DISTRIBUTION_H_
