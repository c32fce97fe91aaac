#include "server/cuda/kernel_timer.h"

#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "common/cuda_check.h"
#include "common/status_macros.h"
#include "server/cuda/llama_kernels.h"

namespace int4kv {

absl::StatusOr<std::unique_ptr<KernelTimer>> KernelTimer::Create(int32_t max_ops) {
  if (max_ops < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("KernelTimer max_ops = ", max_ops, " is invalid: must be >= 1"));
  }
  std::unique_ptr<KernelTimer> timer(new KernelTimer());
  timer->events_.resize(2 * static_cast<size_t>(max_ops));
  for (OwnedEvent& event : timer->events_) RETURN_IF_ERROR(event.Create(/*timing=*/true));
  timer->names_.reserve(max_ops);
  return timer;
}

void KernelTimer::Reset() {
  names_.clear();
  ops_ = 0;
  open_ = false;
  hold_ns_ = 0;
}

absl::Status KernelTimer::Hold(CudaStream stream, int64_t nanoseconds) {
  hold_ns_ = nanoseconds;
  hold_start_ = std::chrono::steady_clock::now();
  return LaunchSpin(nanoseconds, stream);
}

absl::Status KernelTimer::Begin(const char* name, CudaStream stream) {
  if (open_) return absl::FailedPreconditionError("KernelTimer::Begin inside an open op");
  if (2 * (ops_ + 1) > static_cast<int32_t>(events_.size())) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KernelTimer holds at most ", events_.size() / 2, " ops per step"));
  }
  CUDA_RETURN_IF_ERROR(cudaEventRecord(events_[2 * ops_].get(), stream));
  names_.emplace_back(name);
  open_ = true;
  return absl::OkStatus();
}

absl::Status KernelTimer::End(CudaStream stream) {
  if (!open_) return absl::FailedPreconditionError("KernelTimer::End without Begin");
  CUDA_RETURN_IF_ERROR(cudaEventRecord(events_[2 * ops_ + 1].get(), stream));
  ++ops_;
  open_ = false;
  last_end_ = std::chrono::steady_clock::now();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<OpTime>> KernelTimer::Collect() {
  if (open_) return absl::FailedPreconditionError("KernelTimer::Collect inside an open op");
  std::vector<OpTime> times;
  if (ops_ == 0) return times;
  const int64_t queued_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(last_end_ - hold_start_).count();
  CUDA_RETURN_IF_ERROR(cudaEventSynchronize(events_[2 * ops_ - 1].get()));
  if (hold_ns_ > 0 && queued_ns >= hold_ns_) {
    return absl::FailedPreconditionError(
        absl::StrCat("the host took ", queued_ns / 1000, " us to queue the step, longer than the ",
                     hold_ns_ / 1000, " us hold: kernel times would include host gaps"));
  }
  times.reserve(ops_);
  for (int32_t i = 0; i < ops_; ++i) {
    float ms = 0;
    CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, events_[2 * i].get(), events_[2 * i + 1].get()));
    times.push_back(OpTime{names_[i], ms});
  }
  return times;
}

}  // namespace int4kv
