// The one place where an absl::Status becomes a grpc::Status. Codes map 1:1 (both are the
// canonical status codes); the message is kept as is.
#ifndef INT4KV_SERVER_GRPC_STATUS_H_
#define INT4KV_SERVER_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

namespace int4kv {

// OK stays OK; any other status keeps its code and message. A code outside the canonical
// set (never produced by the project) becomes UNKNOWN.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The canonical name of a gRPC status code ("RESOURCE_EXHAUSTED" for 8, and so on), or
// "CODE_<n>" for a number outside the canonical set. For reports and test messages.
std::string GrpcCodeName(int code);

}  // namespace int4kv

#endif  // INT4KV_SERVER_GRPC_STATUS_H_
