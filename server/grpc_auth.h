// Bearer-token authentication of a call: the client sends the metadata
// "authorization: Bearer <token>" and the server compares it with its configured token.
//
// Thread ownership: immutable after construction; Check may run on any number of gRPC threads
// at once.
#ifndef INT4KV_SERVER_GRPC_AUTH_H_
#define INT4KV_SERVER_GRPC_AUTH_H_

#include <grpcpp/support/string_ref.h>

#include <map>
#include <string>

#include "absl/status/status.h"

namespace int4kv {

constexpr char kAuthorizationHeader[] = "authorization";

class BearerTokenAuth {
 public:
  // An empty token turns the check off (every call passes).
  explicit BearerTokenAuth(std::string token) : token_(std::move(token)) {}

  bool enabled() const { return !token_.empty(); }

  // OK if the check is off or the metadata holds "authorization: Bearer <the token>" (the
  // scheme is case-insensitive); otherwise Unauthenticated saying whether the header was
  // missing or the token wrong (never echoing it). The comparison takes the same time for every
  // wrong token of a given length.
  absl::Status Check(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) const;

 private:
  const std::string token_;
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_GRPC_AUTH_H_
