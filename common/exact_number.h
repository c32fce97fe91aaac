#ifndef INT4KV_COMMON_EXACT_NUMBER_H_
#define INT4KV_COMMON_EXACT_NUMBER_H_

#include <charconv>
#include <string>

namespace int4kv {

// A floating-point value as the shortest text that reads back as the same value, for error
// messages that quote a rejected number: absl::StrCat keeps 6 significant digits, so a
// temperature of 100.0000076 (just past the limit of 100) would read "temperature = 100 is
// invalid". Infinities and NaN print as "inf", "-inf" and "nan".
template <typename T>
std::string ExactNumber(T value) {
  char text[32];
  const std::to_chars_result end = std::to_chars(text, text + sizeof(text), value);
  return std::string(text, end.ptr);
}

}  // namespace int4kv

#endif  // INT4KV_COMMON_EXACT_NUMBER_H_
