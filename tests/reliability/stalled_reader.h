// A gRPC client that never reads: a raw HTTP/2 connection over TCP that announces a stream
// flow-control window of 0 bytes, so the server can send a call's headers but no message, and
// never opens the window. Only such a client can hold a server's Write blocked (a gRPC
// library client reads into its own buffers whether or not the application reads), which is
// what the server's --write_stall_timeout is for.
//
// The client answers SETTINGS and PING frames as HTTP/2 requires, so the connection itself
// stays healthy, and reports the first RST_STREAM or GOAWAY the server sends.
#ifndef INT4KV_TESTS_RELIABILITY_STALLED_READER_H_
#define INT4KV_TESTS_RELIABILITY_STALLED_READER_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace int4kv {

class StalledReader {
 public:
  // What the server ended the call with.
  struct Reset {
    bool goaway = false;      // a GOAWAY for the whole connection instead of a RST_STREAM
    uint32_t error_code = 0;  // HTTP/2 error code (0: NO_ERROR, 8: CANCEL)
  };

  // Connects to `port` on 127.0.0.1 and sends the connection preface with a 0-byte initial
  // window.
  static absl::StatusOr<StalledReader> Connect(int port);
  StalledReader(StalledReader&& other) noexcept;
  StalledReader& operator=(StalledReader&&) = delete;
  StalledReader(const StalledReader&) = delete;
  StalledReader& operator=(const StalledReader&) = delete;
  ~StalledReader();  // closes the connection

  // Starts a call of `method` ("/package.Service/Method") on stream 1 with one serialized
  // request message, and half-closes it.
  absl::Status StartCall(const std::string& method, const std::string& request);

  // Reads frames until the server resets stream 1 or sends GOAWAY (answering SETTINGS and PING
  // meanwhile); DeadlineExceeded if neither comes within `timeout`, Unavailable if the
  // connection closes first.
  absl::StatusOr<Reset> WaitForReset(absl::Duration timeout);

 private:
  explicit StalledReader(int fd) : fd_(fd) {}
  absl::Status SendFrame(uint8_t type, uint8_t flags, uint32_t stream, const std::string& payload);
  absl::Status Send(const std::string& bytes);  // all of them, or Unavailable

  int fd_ = -1;
  std::string pending_;  // bytes received and not yet parsed into frames
};

}  // namespace int4kv

#endif  // INT4KV_TESTS_RELIABILITY_STALLED_READER_H_
