// Health that follows the engine: once the engine stops serving after kFailedStepsToStop
// failed model steps in a row (engine.h), the server's health turns NOT_SERVING, so that load
// balancers and orchestrators stop sending it requests, and the failure is logged. Generate
// then answers UNAVAILABLE with the engine's message; the process stays up for inspection
// until it is stopped.
#ifndef INT4KV_SERVER_ENGINE_HEALTH_H_
#define INT4KV_SERVER_ENGINE_HEALTH_H_

#include "server/engine.h"
#include "server/grpc_server.h"

namespace int4kv {

// `server` must outlive `engine`'s Shutdown. Call after server.SetServing(true): an engine
// that has already stopped turns health NOT_SERVING at once.
void StopServingOnEngineFailure(Engine& engine, GrpcServer& server);

}  // namespace int4kv

#endif  // INT4KV_SERVER_ENGINE_HEALTH_H_
