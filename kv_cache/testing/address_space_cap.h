// Test support: caps the process's address space for a scope, so that a multi-GiB allocation
// fails with std::bad_alloc without touching memory.
#ifndef INT4KV_KV_CACHE_TESTING_ADDRESS_SPACE_CAP_H_
#define INT4KV_KV_CACHE_TESTING_ADDRESS_SPACE_CAP_H_

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>

namespace int4kv {

// Caps this process's address space at `headroom` bytes more than it maps now, for the
// scope's lifetime. Sanitizers reserve terabytes and abort on a failed allocation: there the
// cap is not set and active() is false.
class ScopedAddressSpaceCap {
 public:
  explicit ScopedAddressSpaceCap(int64_t headroom) {
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    long mapped_pages = 0;
    std::FILE* statm = std::fopen("/proc/self/statm", "r");
    if (statm == nullptr) return;
    const bool read = std::fscanf(statm, "%ld", &mapped_pages) == 1;
    std::fclose(statm);
    if (!read || getrlimit(RLIMIT_AS, &saved_) != 0) return;
    rlimit capped = saved_;
    capped.rlim_cur = std::min<rlim_t>(
        saved_.rlim_max, static_cast<rlim_t>(mapped_pages) * sysconf(_SC_PAGESIZE) + headroom);
    active_ = setrlimit(RLIMIT_AS, &capped) == 0;
#endif
  }
  ~ScopedAddressSpaceCap() {
    if (active_) setrlimit(RLIMIT_AS, &saved_);
  }
  ScopedAddressSpaceCap(const ScopedAddressSpaceCap&) = delete;
  ScopedAddressSpaceCap& operator=(const ScopedAddressSpaceCap&) = delete;
  bool active() const { return active_; }

 private:
  rlimit saved_{};
  bool active_ = false;
};

}  // namespace int4kv

#endif  // INT4KV_KV_CACHE_TESTING_ADDRESS_SPACE_CAP_H_
