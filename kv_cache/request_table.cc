#include "kv_cache/request_table.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <new>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/cuda_check.h"
#include "common/status_macros.h"
#include "kv_cache/int4_layout.h"
#include "kv_cache/kv_cache_config.h"
#include "kv_cache/request_table_scatter.h"

namespace int4kv {

absl::StatusOr<std::unique_ptr<RequestTable>> RequestTable::Create(int32_t max_requests,
                                                                   int32_t max_seq_len,
                                                                   int64_t num_slots) {
  if (max_requests < 1 || max_seq_len < 1 ||
      int64_t{max_requests} * max_seq_len > kMaxRequestTableEntries) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RequestTable max_requests = ", max_requests, ", max_seq_len = ", max_seq_len,
        " are invalid: each must be >= 1 and their product <= ", kMaxRequestTableEntries,
        " (kMaxRequestTableEntries)"));
  }
  if (num_slots < 2 || num_slots > kMaxCapacitySlots + 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RequestTable num_slots = ", num_slots, " is invalid: must be in [2, ",
        kMaxCapacitySlots + 1, "] (the reserved slot 0 and 1 to kMaxCapacitySlots more)"));
  }
  try {
    return std::unique_ptr<RequestTable>(new RequestTable(max_requests, max_seq_len, num_slots));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", HostBytes(max_requests, max_seq_len),
                     " bytes of host memory for the request table (max_requests = ", max_requests,
                     ", max_seq_len = ", max_seq_len, ")"));
  }
}

RequestTable::RequestTable(int32_t max_requests, int32_t max_seq_len, int64_t num_slots)
    : max_requests_(max_requests),
      max_seq_len_(max_seq_len),
      num_slots_(num_slots),
      table_(static_cast<size_t>(max_requests) * max_seq_len, 0),
      length_(max_requests, 0),
      live_(max_requests, 0),
      synced_length_(max_requests, 0),
      is_dirty_(max_requests, 0),
      free_requests_(max_requests) {
  for (int32_t r = 0; r < max_requests; ++r) free_requests_[r] = r;
}

int64_t RequestTable::HostBytes(int32_t max_requests, int32_t max_seq_len) {
  // table_; length_, synced_length_ and free_requests_ (int32); live_ and is_dirty_ (uint8).
  return int64_t{max_requests} * max_seq_len * 4 + int64_t{max_requests} * (3 * 4 + 2);
}

RequestTable::~RequestTable() {
  // The staging buffers may still feed the last sync's copies. The owners free only what was
  // allocated: even a null cudaFree starts a CUDA context, which a host-only table on a machine
  // with a GPU must not do.
  if (staging_free_.get() != nullptr) cudaEventSynchronize(staging_free_.get());
}

absl::Status RequestTable::CheckRequest(int32_t request) const {
  if (request < 0 || request >= max_requests_) {
    return absl::InvalidArgumentError(
        absl::StrCat("request ", request, " is out of range [0, ", max_requests_, ")"));
  }
  if (!live_[request]) {
    return absl::FailedPreconditionError(absl::StrCat("request ", request, " is not live"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int32_t> RequestTable::AllocateRequest() {
  if (live_count_ == max_requests_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("all ", max_requests_, " request rows (max_requests) are in use"));
  }
  const int32_t request = free_requests_[next_free_];
  next_free_ = next_free_ + 1 == max_requests_ ? 0 : next_free_ + 1;
  live_[request] = 1;
  length_[request] = 0;
  ++live_count_;
  return request;
}

absl::Status RequestTable::FreeRequest(int32_t request) {
  if (absl::Status status = CheckRequest(request); !status.ok()) return status;
  live_[request] = 0;
  length_[request] = 0;
  synced_length_[request] = 0;  // A future occupant's rows are copied from the start.
  // Behind every free row: at the end of the ring's free entries.
  const int64_t free_rows = int64_t{max_requests_} - live_count_;
  free_requests_[(next_free_ + free_rows) % max_requests_] = request;
  --live_count_;
  return absl::OkStatus();
}

absl::Status RequestTable::CheckAppend(int32_t request, int64_t count) const {
  if (absl::Status status = CheckRequest(request); !status.ok()) return status;
  if (count < 0) {
    return absl::InvalidArgumentError(absl::StrCat("count = ", count, " appended to request ",
                                                   request, " is invalid: must be >= 0"));
  }
  // Compared as room left, so that no count overflows the sum.
  if (count > int64_t{max_seq_len_} - length_[request]) {
    return absl::OutOfRangeError(absl::StrCat("request ", request, " has ", length_[request],
                                              " tokens; appending ", count,
                                              " would exceed max_seq_len ", max_seq_len_));
  }
  return absl::OkStatus();
}

absl::Status RequestTable::CheckTruncate(int32_t request, int32_t length) const {
  if (absl::Status status = CheckRequest(request); !status.ok()) return status;
  if (length < 0 || length > length_[request]) {
    return absl::InvalidArgumentError(absl::StrCat("length = ", length, " to truncate request ",
                                                   request, " to is invalid: must be in [0, ",
                                                   length_[request], "] (its tokens)"));
  }
  return absl::OkStatus();
}

absl::Status RequestTable::Truncate(int32_t request, int32_t length) {
  RETURN_IF_ERROR(CheckTruncate(request, length));
  length_[request] = length;
  synced_length_[request] = std::min(synced_length_[request], length);
  return absl::OkStatus();
}

absl::Status RequestTable::Append(int32_t request, absl::Span<const int32_t> slots) {
  RETURN_IF_ERROR(CheckAppend(request, static_cast<int64_t>(slots.size())));
  const int64_t new_length = int64_t{length_[request]} + static_cast<int64_t>(slots.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    if (slots[i] <= kPaddingSlot || slots[i] >= num_slots_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "slots[", i, "] = ", slots[i], " appended to request ", request,
          " is outside the pool's token slots [1, ", num_slots_, ") (slot 0 is reserved)"));
    }
  }
  int32_t* row = table_.data() + static_cast<size_t>(request) * max_seq_len_;
  std::copy(slots.begin(), slots.end(), row + length_[request]);
  length_[request] = static_cast<int32_t>(new_length);
  if (!slots.empty()) MarkDirty(request);
  return absl::OkStatus();
}

void RequestTable::MarkDirty(int32_t request) {
  if (device_table_.get() == nullptr || is_dirty_[request]) return;
  is_dirty_[request] = 1;
  dirty_.push_back(request);
}

int32_t RequestTable::SyncedLength(int32_t request) const {
  if (device_table_.get() == nullptr || !IsLive(request)) return 0;
  return synced_length_[request];
}

bool RequestTable::IsLive(int32_t request) const {
  return request >= 0 && request < max_requests_ && live_[request] != 0;
}

int32_t RequestTable::Length(int32_t request) const {
  return IsLive(request) ? length_[request] : 0;
}

absl::Span<const int32_t> RequestTable::Tokens(int32_t request) const {
  if (!IsLive(request)) return {};
  return absl::MakeConstSpan(table_.data() + static_cast<size_t>(request) * max_seq_len_,
                             length_[request]);
}

absl::Status RequestTable::EnableDeviceMirror() {
  if (device_table_.get() != nullptr) return absl::OkStatus();
  // SyncToDevice addresses the mirror's entries with 32-bit indices, which Create's limit
  // (kMaxRequestTableEntries) keeps in range.
  // Everything is allocated into these owners first and moved into the members only once all
  // of it exists; on an early return they free what was allocated.
  DeviceBuffer table, device_index, device_value;
  PinnedBuffer staged_index, staged_value;
  OwnedEvent staging_free;
  const size_t bytes = table_.size() * sizeof(int32_t);
  const std::string table_name =
      absl::StrCat("the req_to_token device mirror (max_requests = ", max_requests_,
                   ", max_seq_len = ", max_seq_len_, ")");
  RETURN_IF_ERROR(table.Allocate(bytes, table_name.c_str()));
  CUDA_RETURN_IF_ERROR(cudaMemset(table.get(), 0, bytes));
  // Enough for a step in which every request appends 64 tokens; larger syncs go in pieces.
  constexpr int64_t kStagingEntries = int64_t{64} * 1024;
  const int32_t staging_capacity =
      static_cast<int32_t>(std::min<int64_t>(kStagingEntries, static_cast<int64_t>(table_.size())));
  const size_t staging_bytes = static_cast<size_t>(staging_capacity) * 4;
  constexpr const char* kStagingName = "the req_to_token mirror's staging buffers";
  RETURN_IF_ERROR(staged_index.Allocate(staging_bytes, kStagingName));
  RETURN_IF_ERROR(staged_value.Allocate(staging_bytes, kStagingName));
  RETURN_IF_ERROR(device_index.Allocate(staging_bytes, kStagingName));
  RETURN_IF_ERROR(device_value.Allocate(staging_bytes, kStagingName));
  RETURN_IF_ERROR(staging_free.Create(/*timing=*/false));
  // The zero fill runs on the legacy default stream, which a stream created with
  // cudaStreamNonBlocking does not wait for: a later SyncToDevice could land under it.
  CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  // Room for every request in the dirty list, so that Append, which marks its request dirty
  // after it has changed the table, never allocates.
  try {
    dirty_.reserve(max_requests_);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate the dirty list of ", max_requests_, " requests"));
  }
  device_table_ = std::move(table);
  staging_capacity_ = staging_capacity;
  staged_index_ = std::move(staged_index);
  staged_value_ = std::move(staged_value);
  device_index_ = std::move(device_index);
  device_value_ = std::move(device_value);
  staging_free_ = std::move(staging_free);
  for (int32_t r = 0; r < max_requests_; ++r) {
    synced_length_[r] = 0;
    if (live_[r] && length_[r] > 0) MarkDirty(r);
  }
  return absl::OkStatus();
}

absl::Status RequestTable::FlushStaged(int32_t count, CudaStream stream) {
  if (count == 0) return absl::OkStatus();
  const size_t bytes = static_cast<size_t>(count) * 4;
  absl::Status status = CudaStatus(cudaMemcpyAsync(device_index_.get(), staged_index_.get(), bytes,
                                                   cudaMemcpyHostToDevice, stream),
                                   "cudaMemcpyAsync of the staged indices");
  if (status.ok()) {
    status = CudaStatus(cudaMemcpyAsync(device_value_.get(), staged_value_.get(), bytes,
                                        cudaMemcpyHostToDevice, stream),
                        "cudaMemcpyAsync of the staged values");
  }
  if (status.ok()) {
    status = ScatterInt32(device_table_.as<int32_t>(), device_index_.as<uint32_t>(),
                          device_value_.as<int32_t>(), count, stream);
  }
  // Recorded whatever failed: a copy enqueued before the failure may still read the staging
  // buffers, and the next sync must wait for it before it rewrites them.
  const absl::Status recorded =
      CudaStatus(cudaEventRecord(staging_free_.get(), stream), "cudaEventRecord(staging_free_)");
  return status.ok() ? recorded : status;
}

absl::Status RequestTable::SyncToDevice(CudaStream stream) {
  if (device_table_.get() == nullptr) {
    return absl::FailedPreconditionError("SyncToDevice before EnableDeviceMirror");
  }
  // The waits below are illegal in a capture (and would end it); in a relaxed capture they
  // would pass while the copies only joined the graph, so the rows would count as sent.
  RETURN_IF_ERROR(RefuseCapture(stream, "SyncToDevice",
                                "it waits on the host, so call it before the capture, and "
                                "before each replay"));
  if (dirty_.empty()) return absl::OkStatus();
  // The staging buffers may still feed the previous sync's copies.
  CUDA_RETURN_IF_ERROR(cudaEventSynchronize(staging_free_.get()));
  // dirty_, is_dirty_ and synced_length_ change only after the last flush succeeded: a sync
  // that fails part-way is sent in full by the next one (rewriting an entry is harmless).
  int32_t staged = 0;
  for (const int32_t request : dirty_) {
    if (!live_[request]) continue;
    const uint32_t row = static_cast<uint32_t>(request) * static_cast<uint32_t>(max_seq_len_);
    for (int32_t t = synced_length_[request]; t < length_[request]; ++t) {
      if (staged == staging_capacity_) {
        RETURN_IF_ERROR(FlushStaged(staged, stream));
        CUDA_RETURN_IF_ERROR(cudaEventSynchronize(staging_free_.get()));
        staged = 0;
      }
      staged_index_.as<uint32_t>()[staged] = row + static_cast<uint32_t>(t);
      staged_value_.as<int32_t>()[staged] = table_[row + t];
      ++staged;
    }
  }
  RETURN_IF_ERROR(FlushStaged(staged, stream));
  for (const int32_t request : dirty_) {
    is_dirty_[request] = 0;
    if (live_[request]) synced_length_[request] = length_[request];
  }
  dirty_.clear();
  return absl::OkStatus();
}

}  // namespace int4kv
