// req_to_token: for each live request, the KV slot of each of its tokens, in order.
//
// Owns a host table [max_requests][max_seq_len] of int32 slots and per-request lengths, and
// optionally a device mirror of the table for the CUDA backend. The mirror is updated only by
// SyncToDevice(), which sends the entries appended since the last sync as (index, slot)
// pairs through a pinned staging buffer and scatters them on the device: two copies and one
// small kernel per 65,536 entries, whatever the number of requests (a larger sync waits for
// each piece's copies before staging the next).
//
// Thread ownership: not thread-safe. In the server it belongs to the engine's scheduler thread.
#ifndef INT4KV_KV_CACHE_REQUEST_TABLE_H_
#define INT4KV_KV_CACHE_REQUEST_TABLE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/cuda_stream.h"
#include "common/device_memory.h"

namespace int4kv {

class RequestTable {
 public:
  // A table of max_requests rows of max_seq_len slots, all free. num_slots: the pool's slots
  // (KvLayout::num_slots, the reserved slot 0 included); every appended slot must fall in
  // [1, num_slots). Arguments outside KvCacheConfig's ranges (max_requests and max_seq_len
  // >= 1, their product <= kMaxRequestTableEntries, num_slots in [2, kMaxCapacitySlots + 1])
  // give InvalidArgument naming the argument and its range, before anything is allocated;
  // HostBytes(max_requests, max_seq_len) that cannot be allocated gives ResourceExhausted.
  static absl::StatusOr<std::unique_ptr<RequestTable>> Create(int32_t max_requests,
                                                              int32_t max_seq_len,
                                                              int64_t num_slots);
  ~RequestTable();
  RequestTable(const RequestTable&) = delete;
  RequestTable& operator=(const RequestTable&) = delete;

  // Host bytes the constructor allocates: the int32 table and five per-request arrays.
  static int64_t HostBytes(int32_t max_requests, int32_t max_seq_len);

  // Claims a free request row (length 0): the one freed longest ago (the rows in order at
  // first). ResourceExhausted when all rows are in use. A request id is its row's number: an id
  // kept past its FreeRequest is refused (FailedPrecondition, not live) until the row is
  // claimed again, and from then on names the new request, so each id needs one owner that
  // frees it once.
  absl::StatusOr<int32_t> AllocateRequest();
  // Releases a row; its slots are the caller's to free in the TokenSlotAllocator.
  absl::Status FreeRequest(int32_t request);
  // Appends slots to a live request's row. Past max_seq_len: OutOfRange; a slot outside
  // [1, num_slots): InvalidArgument naming it (a kernel would read outside the pool, or the
  // reserved slot 0 that padded rows write). On an error nothing changes.
  absl::Status Append(int32_t request, absl::Span<const int32_t> slots);
  // What Append checks of the request alone, for `count` more slots: InvalidArgument for a
  // request outside [0, max_requests) or a negative count, FailedPrecondition for a request
  // not live, OutOfRange past max_seq_len. Lets a caller refuse an append before it allocates the
  // slots.
  absl::Status CheckAppend(int32_t request, int64_t count) const;
  // Shortens a live request's row to its first `length` tokens (speculative tokens that were
  // rejected, a retracted step); the dropped slots are the caller's to free. The device
  // mirror keeps only what it had of that prefix: SyncToDevice sends the row again from there
  // once it grows. InvalidArgument for a length outside [0, Length(request)] (and as
  // CheckAppend for the request); on an error nothing changes.
  absl::Status Truncate(int32_t request, int32_t length);
  // What Truncate checks, without changing anything.
  absl::Status CheckTruncate(int32_t request, int32_t length) const;

  bool IsLive(int32_t request) const;
  int32_t Length(int32_t request) const;                    // 0 for a row not in use
  absl::Span<const int32_t> Tokens(int32_t request) const;  // [Length(request)] slots
  int32_t live_count() const { return live_count_; }
  int32_t max_requests() const { return max_requests_; }
  int32_t max_seq_len() const { return max_seq_len_; }
  int64_t num_slots() const { return num_slots_; }

  // Host table [max_requests][max_seq_len]; entries past a row's length are unspecified.
  const int32_t* host_table() const { return table_.data(); }

  // Allocates the device mirror (zero-filled) and the sync staging buffers. Call once at
  // start-up. All or nothing: on an error nothing is kept, and a later call starts over.
  absl::Status EnableDeviceMirror();
  // Copies what changed since the last sync into the mirror, ordered on `stream`. On an error
  // the requests stay marked as changed, and the next sync sends all of their new entries.
  // Waits on the host for the previous sync's copies, so a stream being captured is refused
  // (FailedPrecondition): sync before capturing or replaying a step that reads the mirror.
  absl::Status SyncToDevice(CudaStream stream);
  // Device table [max_requests][max_seq_len]; nullptr until EnableDeviceMirror().
  const int32_t* device_table() const { return device_table_.as<int32_t>(); }
  // Leading entries of a request's row that the last SyncToDevice sent to the mirror (0 for a
  // row not in use, and for every row without a mirror). A reused row's mirror still holds the
  // previous occupant's slots past this length.
  int32_t SyncedLength(int32_t request) const;

 private:
  // Arguments checked by Create; throws std::bad_alloc when the host arrays do not fit.
  RequestTable(int32_t max_requests, int32_t max_seq_len, int64_t num_slots);
  absl::Status CheckRequest(int32_t request) const;
  void MarkDirty(int32_t request);

  int32_t max_requests_;
  int32_t max_seq_len_;
  int64_t num_slots_;
  std::vector<int32_t> table_;          // [max_requests][max_seq_len]
  std::vector<int32_t> length_;         // [max_requests]
  std::vector<uint8_t> live_;           // [max_requests]
  int32_t live_count_ = 0;

  absl::Status FlushStaged(int32_t count, CudaStream stream);

  DeviceBuffer device_table_;           // [max_requests][max_seq_len]; empty without a mirror
  std::vector<int32_t> synced_length_;  // [max_requests], prefix already in the mirror
  std::vector<int32_t> dirty_;          // requests with length > synced_length
  std::vector<uint8_t> is_dirty_;       // [max_requests]
  // The free rows, a ring of max_requests entries: the max_requests - live_count_ entries
  // from next_free_ on, in the order they were freed. Rows are reused first freed, first
  // reused, so that a stale id stays refused (not live) for as long as possible.
  std::vector<int32_t> free_requests_;
  int32_t next_free_ = 0;  // the ring entry AllocateRequest takes next

  // Sync staging: pinned host pairs and their device copies, [staging_capacity_] each.
  int32_t staging_capacity_ = 0;
  PinnedBuffer staged_index_;  // uint32: flat table index of each entry
  PinnedBuffer staged_value_;  // int32: its slot
  DeviceBuffer device_index_;
  DeviceBuffer device_value_;
  OwnedEvent staging_free_;  // recorded after the last copy out of staging
};

}  // namespace int4kv

#endif  // INT4KV_KV_CACHE_REQUEST_TABLE_H_
