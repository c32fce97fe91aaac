// Times each launch of an eagerly run step with a pair of CUDA events around it, for the
// engine benchmark's "sum of kernel times". Hold() first queues a spin kernel so that the
// host queues the whole step before the device reaches it: the event pairs then measure device
// time only, not the host's launch latency between kernels.
//
//   timer.Reset();
//   timer.Hold(stream, 20'000'000);            // 20 ms head start for the host
//   ... model->ProfileStep(batch, attention, &timer) calls Begin/End around each launch ...
//   ASSIGN_OR_RETURN(std::vector<OpTime> ops, timer.Collect());
//
// Thread ownership: one thread at a time.
#ifndef INT4KV_SERVER_CUDA_KERNEL_TIMER_H_
#define INT4KV_SERVER_CUDA_KERNEL_TIMER_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/cuda_stream.h"
#include "common/device_memory.h"

namespace int4kv {

struct OpTime {
  std::string name;  // the op ("qkv_gemm", "attention", ...)
  double ms = 0;     // device time between its Begin and End events
};

class KernelTimer {
 public:
  // Room for max_ops timed launches between Resets (events are created here, not per step).
  static absl::StatusOr<std::unique_ptr<KernelTimer>> Create(int32_t max_ops);

  void Reset();
  // Queues a kernel that keeps `stream` busy for `nanoseconds`.
  absl::Status Hold(CudaStream stream, int64_t nanoseconds);
  // Records the events around one launch (or a few back-to-back launches of one op).
  absl::Status Begin(const char* name, CudaStream stream);
  absl::Status End(CudaStream stream);
  // Waits for the last event and returns every op's time, in launch order. FailedPrecondition
  // when the host took longer to queue the step than the Hold lasted (the times would then
  // include host gaps).
  absl::StatusOr<std::vector<OpTime>> Collect();

 private:
  KernelTimer() = default;

  std::vector<OwnedEvent> events_;  // [2 * max_ops]: begin, end of each op
  std::vector<std::string> names_;  // [ops so far]
  int32_t ops_ = 0;
  bool open_ = false;
  int64_t hold_ns_ = 0;
  std::chrono::steady_clock::time_point hold_start_;
  std::chrono::steady_clock::time_point last_end_;
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_CUDA_KERNEL_TIMER_H_
