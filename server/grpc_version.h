// The server's version, reported by GetServerInfo and the start-up log.
#ifndef INT4KV_SERVER_GRPC_VERSION_H_
#define INT4KV_SERVER_GRPC_VERSION_H_

namespace int4kv {

constexpr char kInt4kvVersion[] = "0.1.0";

}  // namespace int4kv

#endif  // INT4KV_SERVER_GRPC_VERSION_H_
