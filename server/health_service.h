// grpc.health.v1.Health for a server and its named services, all sharing one status.
//
// The status is NOT_SERVING from construction until SetServing(true), so a client can never
// see SERVING before the owner says so (libgrpc++'s built-in service starts as SERVING and
// can only be changed once the server is running). Check answers the status, or NOT_FOUND for
// a name that is neither "" (the server as a whole) nor one given at construction. Watch
// sends the status at once (SERVICE_UNKNOWN for an unknown name, and nothing after that), then
// each change: changes that come while a message is being written are merged, and the stream
// gets the status current when the write completes, if it differs from the last one sent. A
// stream lasts until the client cancels or Shutdown ends it with OK. Both use gRPC's callback
// API, so an open Watch stream holds no server thread.
//
// Thread ownership: SetServing and Shutdown may be called from any thread; gRPC runs the
// handlers and each stream's reactions on its own threads. The service must outlive the
// grpc::Server it is registered with.
#ifndef INT4KV_SERVER_HEALTH_SERVICE_H_
#define INT4KV_SERVER_HEALTH_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "proto/health.grpc.pb.h"

namespace int4kv {

class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  explicit HealthService(const std::vector<std::string>& names);
  ~HealthService() override;
  HealthService(const HealthService&) = delete;
  HealthService& operator=(const HealthService&) = delete;

  // The status of the server and of every named service. Ignored after Shutdown.
  void SetServing(bool serving);

  // NOT_SERVING from now on. Every open Watch stream gets it, if its last status differs (a
  // stream of an unknown name gets nothing), and then ends with OK; a Watch started later
  // ends the same way right after its first status. Idempotent.
  void Shutdown();

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const grpc::health::v1::HealthCheckRequest* request,
                                  grpc::health::v1::HealthCheckResponse* response) override;
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext* context,
      const grpc::health::v1::HealthCheckRequest* request) override;

 private:
  class WatchStream;

  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;
  // The status reported for `name`; SERVICE_UNKNOWN if it is not served. Needs mutex_.
  ServingStatus StatusLocked(const std::string& name) const;

  const std::set<std::string> names_;  // "" and the names given at construction
  mutable std::mutex mutex_;
  bool serving_ = false;    // guarded by mutex_
  bool shut_down_ = false;  // guarded by mutex_
  // Open Watch streams, guarded by mutex_. Each stream owns itself and leaves the set when
  // gRPC is done with it; the destructor waits for that.
  std::set<WatchStream*> streams_;
  std::condition_variable streams_done_;  // notified when streams_ empties
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_HEALTH_SERVICE_H_
