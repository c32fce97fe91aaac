#include "server/engine_health.h"

#include <string>

#include "spdlog/spdlog.h"

namespace int4kv {

void StopServingOnEngineFailure(Engine& engine, GrpcServer& server) {
  engine.SetFailureHandler([&server](const absl::Status& failure) {
    spdlog::error("{}: health NOT_SERVING, new requests UNAVAILABLE; restart the server",
                  std::string(failure.message()));
    server.SetServing(false);
  });
}

}  // namespace int4kv
