#include "tools/loopback_target.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace int4kv {
namespace {

bool IsLoopbackIpv4(const std::string& host) {
  in_addr address;
  if (inet_pton(AF_INET, host.c_str(), &address) != 1) return false;
  return (ntohl(address.s_addr) >> 24) == 127;
}

bool IsLoopbackIpv6(const std::string& host) {
  in6_addr address;
  if (inet_pton(AF_INET6, host.c_str(), &address) != 1) return false;
  if (IN6_IS_ADDR_LOOPBACK(&address)) return true;
  if (!IN6_IS_ADDR_V4MAPPED(&address)) return false;
  return address.s6_addr[12] == 127;  // ::ffff:127.x.y.z
}

}  // namespace

absl::StatusOr<std::string> ParseLoopbackTarget(absl::string_view server) {
  const absl::string_view value = absl::StripAsciiWhitespace(server);
  auto refuse = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--server = '", server, "' is refused: ", why,
        ". The load generator only targets this machine: localhost, 127.0.0.0/8 or [::1], "
        "as HOST:PORT"));
  };
  if (value.empty()) return refuse("it is empty");
  const size_t colon = value.rfind(':');
  const absl::string_view port_text =
      colon == absl::string_view::npos ? value : value.substr(colon + 1);
  int port = 0;
  if (!absl::SimpleAtoi(port_text, &port) || port < 1 || port > 65535) {
    return refuse("the port must be a number in [1, 65535]");
  }
  if (colon == absl::string_view::npos) return absl::StrCat("127.0.0.1:", port);
  const absl::string_view host = value.substr(0, colon);
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    const std::string inner(host.substr(1, host.size() - 2));
    if (IsLoopbackIpv6(inner)) return absl::StrCat("[", inner, "]:", port);
    return refuse(absl::StrCat("[", inner, "] is not an IPv6 loopback address"));
  }
  const std::string host_text(host);
  if (absl::AsciiStrToLower(host_text) == "localhost") return absl::StrCat("localhost:", port);
  if (IsLoopbackIpv4(host_text)) return absl::StrCat(host_text, ":", port);
  if (host_text.find(':') != std::string::npos) {
    return refuse("write an IPv6 address in brackets, e.g. [::1]:50051");
  }
  return refuse(absl::StrCat("host '", host_text, "' is not a loopback address"));
}

}  // namespace int4kv
