#include "server/grpc_auth.h"

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace int4kv {
namespace {

constexpr absl::string_view kBearerPrefix = "bearer ";

// Compares every byte of the longer input, so the time does not reveal how long a prefix of
// the expected token a guess got right.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  const size_t n = a.size() > b.size() ? a.size() : b.size();
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

}  // namespace

absl::Status BearerTokenAuth::Check(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) const {
  if (!enabled()) return absl::OkStatus();
  const auto it = metadata.find(kAuthorizationHeader);
  if (it == metadata.end()) {
    return absl::UnauthenticatedError(
        "missing authorization metadata: this server requires \"authorization: Bearer <token>\"");
  }
  const absl::string_view value(it->second.data(), it->second.size());
  if (!absl::StartsWithIgnoreCase(value, kBearerPrefix)) {
    return absl::UnauthenticatedError(
        "authorization metadata is not a bearer token: expected \"Bearer <token>\"");
  }
  if (!ConstantTimeEquals(value.substr(kBearerPrefix.size()), token_)) {
    return absl::UnauthenticatedError("the bearer token is wrong");
  }
  return absl::OkStatus();
}

}  // namespace int4kv
