#include "tests/reliability/stalled_reader.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/monotonic_time.h"

namespace int4kv {
namespace {

// HTTP/2 frame types and flags (RFC 9113, section 6).
constexpr uint8_t kData = 0x0, kHeaders = 0x1, kRstStream = 0x3, kSettings = 0x4, kPing = 0x6,
                  kGoaway = 0x7;
constexpr uint8_t kEndStream = 0x1, kAck = 0x1, kEndHeaders = 0x4;
constexpr uint16_t kSettingsInitialWindowSize = 0x4;
constexpr size_t kFrameHeaderBytes = 9;

uint32_t ReadBigEndian(const std::string& bytes, size_t at, int count) {
  uint32_t value = 0;
  for (int i = 0; i < count; ++i) value = value << 8 | static_cast<uint8_t>(bytes[at + i]);
  return value;
}

void AppendBigEndian(uint32_t value, int count, std::string* out) {
  for (int i = count - 1; i >= 0; --i) out->push_back(static_cast<char>(value >> (8 * i) & 0xff));
}

// One header as an HPACK literal without indexing, new name, no Huffman coding (RFC 7541,
// section 6.2.2); names and values here are shorter than 127 bytes.
void AppendHeader(const std::string& name, const std::string& value, std::string* block) {
  block->push_back('\0');
  block->push_back(static_cast<char>(name.size()));
  *block += name;
  block->push_back(static_cast<char>(value.size()));
  *block += value;
}

absl::Status ErrnoStatus(const char* what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
}

}  // namespace

absl::StatusOr<StalledReader> StalledReader::Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return ErrnoStatus("socket");
  StalledReader reader(fd);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    return ErrnoStatus("connect");
  }
  if (absl::Status s = reader.Send("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"); !s.ok()) return s;
  std::string settings;
  AppendBigEndian(kSettingsInitialWindowSize, 2, &settings);
  AppendBigEndian(0, 4, &settings);  // no stream may receive a byte of DATA
  if (absl::Status s = reader.SendFrame(kSettings, 0, 0, settings); !s.ok()) return s;
  return reader;
}

StalledReader::StalledReader(StalledReader&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), pending_(std::move(other.pending_)) {}

StalledReader::~StalledReader() {
  if (fd_ >= 0) close(fd_);
}

absl::Status StalledReader::SendFrame(uint8_t type, uint8_t flags, uint32_t stream,
                                      const std::string& payload) {
  std::string frame;
  AppendBigEndian(static_cast<uint32_t>(payload.size()), 3, &frame);
  frame.push_back(static_cast<char>(type));
  frame.push_back(static_cast<char>(flags));
  AppendBigEndian(stream, 4, &frame);
  frame += payload;
  return Send(frame);
}

absl::Status StalledReader::Send(const std::string& bytes) {
  if (send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(bytes.size())) {
    return ErrnoStatus("send");
  }
  return absl::OkStatus();
}

absl::Status StalledReader::StartCall(const std::string& method, const std::string& request) {
  std::string headers;
  AppendHeader(":method", "POST", &headers);
  AppendHeader(":scheme", "http", &headers);
  AppendHeader(":path", method, &headers);
  AppendHeader(":authority", "localhost", &headers);
  AppendHeader("content-type", "application/grpc", &headers);
  AppendHeader("te", "trailers", &headers);
  if (absl::Status s = SendFrame(kHeaders, kEndHeaders, 1, headers); !s.ok()) return s;
  std::string message(1, '\0');  // gRPC message framing: not compressed, length, bytes
  AppendBigEndian(static_cast<uint32_t>(request.size()), 4, &message);
  message += request;
  return SendFrame(kData, kEndStream, 1, message);
}

absl::StatusOr<StalledReader::Reset> StalledReader::WaitForReset(absl::Duration timeout) {
  const absl::Time deadline = MonotonicNow() + timeout;
  while (true) {
    // Every whole frame received so far.
    while (pending_.size() >= kFrameHeaderBytes) {
      const size_t length = ReadBigEndian(pending_, 0, 3);
      if (pending_.size() < kFrameHeaderBytes + length) break;
      const uint8_t type = static_cast<uint8_t>(pending_[3]);
      const uint8_t flags = static_cast<uint8_t>(pending_[4]);
      const uint32_t stream = ReadBigEndian(pending_, 5, 4) & 0x7fffffffu;
      const std::string payload = pending_.substr(kFrameHeaderBytes, length);
      pending_.erase(0, kFrameHeaderBytes + length);
      if (type == kSettings && !(flags & kAck)) {
        if (absl::Status s = SendFrame(kSettings, kAck, 0, ""); !s.ok()) return s;
      } else if (type == kPing && !(flags & kAck)) {
        if (absl::Status s = SendFrame(kPing, kAck, 0, payload); !s.ok()) return s;
      } else if (type == kRstStream && stream == 1 && length == 4) {
        return Reset{false, ReadBigEndian(payload, 0, 4)};
      } else if (type == kGoaway && length >= 8) {
        return Reset{true, ReadBigEndian(payload, 4, 4)};
      }
    }
    const absl::Duration left = deadline - MonotonicNow();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(
          absl::StrCat("no RST_STREAM or GOAWAY within ", absl::FormatDuration(timeout)));
    }
    pollfd readable{fd_, POLLIN, 0};
    const int ready = poll(&readable, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (ready < 0 && errno != EINTR) return ErrnoStatus("poll");
    if (ready <= 0) continue;
    char buffer[16384];
    const ssize_t got = recv(fd_, buffer, sizeof(buffer), 0);
    if (got == 0) return absl::UnavailableError("the server closed the connection");
    if (got < 0 && errno != EINTR) return ErrnoStatus("recv");
    if (got > 0) pending_.append(buffer, static_cast<size_t>(got));
  }
}

}  // namespace int4kv
