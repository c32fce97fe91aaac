// The number of threads a process on this machine runs, read from /proc/PID/status: how the
// reliability suites see which calls hold a server thread.
#ifndef INT4KV_TESTS_RELIABILITY_THREAD_COUNT_H_
#define INT4KV_TESTS_RELIABILITY_THREAD_COUNT_H_

#include <sys/types.h>

#include "absl/status/statusor.h"

namespace int4kv {

// The "Threads:" line of /proc/`pid`/status. NotFound if the process does not exist (or has
// been reaped), Internal if the file has no such line.
absl::StatusOr<int> ThreadCount(pid_t pid);

}  // namespace int4kv

#endif  // INT4KV_TESTS_RELIABILITY_THREAD_COUNT_H_
