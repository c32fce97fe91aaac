// One grpc.health.v1.Health/Check call, for tests of the health service.
#ifndef INT4KV_SERVER_TESTING_HEALTH_CHECK_H_
#define INT4KV_SERVER_TESTING_HEALTH_CHECK_H_

#include <grpcpp/grpcpp.h>

#include <string>

#include "proto/health.grpc.pb.h"

namespace int4kv {

// Calls Check for `service` (5 s deadline) and returns the RPC's status; *status gets the
// answer (UNKNOWN when the call fails).
grpc::Status CheckHealth(grpc::health::v1::Health::Stub& stub, const std::string& service,
                         grpc::health::v1::HealthCheckResponse::ServingStatus* status);

}  // namespace int4kv

#endif  // INT4KV_SERVER_TESTING_HEALTH_CHECK_H_
