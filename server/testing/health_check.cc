#include "server/testing/health_check.h"

#include <chrono>

namespace int4kv {

grpc::Status CheckHealth(grpc::health::v1::Health::Stub& stub, const std::string& service,
                         grpc::health::v1::HealthCheckResponse::ServingStatus* status) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status result = stub.Check(&context, request, &response);
  *status = response.status();
  return result;
}

}  // namespace int4kv
