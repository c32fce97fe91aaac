#include "tests/reliability/thread_count.h"

#include <fstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace int4kv {

absl::StatusOr<int> ThreadCount(pid_t pid) {
  const std::string path = absl::StrCat("/proc/", pid, "/status");
  std::ifstream status(path);
  if (!status) return absl::NotFoundError(absl::StrCat("no process ", pid, " (", path, ")"));
  std::string line;
  while (std::getline(status, line)) {
    absl::string_view rest = line;
    if (!absl::ConsumePrefix(&rest, "Threads:")) continue;
    int threads = 0;
    if (!absl::SimpleAtoi(rest, &threads) || threads < 1) {
      return absl::InternalError(absl::StrCat(path, ": unreadable line '", line, "'"));
    }
    return threads;
  }
  return absl::InternalError(absl::StrCat(path, " has no Threads: line"));
}

}  // namespace int4kv
