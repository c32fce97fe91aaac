// The load generator only talks to servers on this machine: --server must name a loopback
// address, so a load test can never be pointed at someone else's service by mistake.
#ifndef INT4KV_TOOLS_LOOPBACK_TARGET_H_
#define INT4KV_TOOLS_LOOPBACK_TARGET_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace int4kv {

// Parses HOST:PORT (or a bare PORT, meaning 127.0.0.1:PORT) into the gRPC target to dial.
// HOST must be "localhost", an IPv4 address in 127.0.0.0/8, or an IPv6 loopback in brackets
// ("[::1]", "[::ffff:127.0.0.1]"); PORT must be in [1, 65535]. Anything else is
// InvalidArgument naming --server, the value and why it was refused.
absl::StatusOr<std::string> ParseLoopbackTarget(absl::string_view server);

}  // namespace int4kv

#endif  // INT4KV_TOOLS_LOOPBACK_TARGET_H_
