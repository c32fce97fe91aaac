// Conversions between the int4kv.v1 protos and the engine's native types, at the gRPC edge.
// Range checks of a request are the engine's (ValidateRequest, run by Engine::Submit); this
// layer only parses the wire form (unset optional fields take their defaults) and checks what
// the engine does not know about (the client's request id).
#ifndef INT4KV_SERVER_GRPC_CONVERT_H_
#define INT4KV_SERVER_GRPC_CONVERT_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/generation.pb.h"
#include "server/engine.h"
#include "server/request.h"

namespace int4kv {

constexpr size_t kMaxRequestIdBytes = 128;

// What GetServerInfo reports beyond EngineInfo: fixed when the server starts. (The device name
// and the graph buckets are the engine's: EngineInfo.)
struct ServerDetails {
  std::string version;
};

// InvalidArgument naming request_id and its limit for an id over kMaxRequestIdBytes or with a
// byte outside printable ASCII (it is echoed into logs).
absl::Status ValidateRequestId(absl::string_view request_id);

// The engine request for `proto`: unset top_p becomes 1, unset seed stays unset (the engine
// picks one). Fails only on a bad request_id; every other field is checked by the engine.
absl::StatusOr<GenerateRequest> RequestFromProto(const v1::GenerateRequest& proto);

// FINISH_REASON_{LENGTH,STOP,EOS} for the normal reasons; UNSPECIFIED for kCancelled and kError
// (those end the RPC with a non-OK status instead).
v1::FinishReason FinishReasonToProto(FinishReason reason);

void UsageToProto(const Usage& usage, v1::Usage* proto);

v1::ServerInfo ServerInfoToProto(const EngineInfo& info, const ServerDetails& details);

}  // namespace int4kv

#endif  // INT4KV_SERVER_GRPC_CONVERT_H_
