#include "kv_cache/request_table.h"

#include <cuda_runtime_api.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/cuda_check.h"
#include "gtest/gtest.h"
#include "kv_cache/int4_layout.h"
#include "kv_cache/testing/address_space_cap.h"

namespace int4kv {
namespace {

TEST(RequestTableTest, AppendAndFree) {
  const std::unique_ptr<RequestTable> table = *RequestTable::Create(2, 4, 16);
  const int32_t a = *table->AllocateRequest();
  const int32_t b = *table->AllocateRequest();
  EXPECT_NE(a, b);
  EXPECT_EQ(table->AllocateRequest().status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(table->Append(a, {5, 6}).ok());
  ASSERT_TRUE(table->Append(a, {7}).ok());
  EXPECT_EQ(std::vector<int32_t>(table->Tokens(a).begin(), table->Tokens(a).end()),
            (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(table->host_table()[a * 4 + 2], 7);

  // Past max_seq_len: error, nothing appended.
  const absl::Status status = table->Append(a, {8, 9});
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(status.message().find("max_seq_len 4"), std::string::npos) << status.message();
  EXPECT_EQ(table->Length(a), 3);

  ASSERT_TRUE(table->FreeRequest(a).ok());
  EXPECT_FALSE(table->IsLive(a));
  EXPECT_EQ(table->FreeRequest(a).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(table->Append(a, {1}).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(table->Append(7, {1}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table->live_count(), 1);
  const int32_t c = *table->AllocateRequest();
  EXPECT_EQ(table->Length(c), 0);
  EXPECT_EQ(table->Length(b), 0);
}

// Rows are reused first freed, first reused: an id kept after its release stays refused while
// other rows are free, instead of naming the next request at once.
TEST(RequestTableTest, FreedRowsAreReusedInTheOrderTheyWereFreed) {
  const std::unique_ptr<RequestTable> table = *RequestTable::Create(4, 4, 16);
  std::vector<int32_t> order;
  for (int i = 0; i < 4; ++i) order.push_back(*table->AllocateRequest());
  EXPECT_EQ(order, (std::vector<int32_t>{0, 1, 2, 3}));
  ASSERT_TRUE(table->FreeRequest(2).ok());
  ASSERT_TRUE(table->FreeRequest(0).ok());
  ASSERT_TRUE(table->FreeRequest(3).ok());
  const int32_t first = *table->AllocateRequest();
  EXPECT_EQ(first, 2);
  // A stale release of row 0 or 3, still free, is refused and frees nothing.
  EXPECT_EQ(table->FreeRequest(0).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(table->FreeRequest(3).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(table->live_count(), 2);
  ASSERT_TRUE(table->FreeRequest(first).ok());
  // 0 and 3 were freed before row 2 was freed again: they come first, 2 last.
  order.clear();
  for (int i = 0; i < 3; ++i) order.push_back(*table->AllocateRequest());
  EXPECT_EQ(order, (std::vector<int32_t>{0, 3, 2}));
  EXPECT_EQ(table->AllocateRequest().status().code(), absl::StatusCode::kResourceExhausted);
  // The ring wraps: frees and claims past max_requests of them keep the order.
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(table->FreeRequest(1).ok());
    ASSERT_TRUE(table->FreeRequest(3).ok());
    EXPECT_EQ(*table->AllocateRequest(), 1) << round;
    EXPECT_EQ(*table->AllocateRequest(), 3) << round;
  }
}

// A count near the int64 limit is OutOfRange, as any append past max_seq_len is; it must not
// wrap the length check into an append the table would then try.
TEST(RequestTableTest, HugeAppendCountsAreOutOfRange) {
  const std::unique_ptr<RequestTable> table = *RequestTable::Create(1, 4, 16);
  const int32_t a = *table->AllocateRequest();
  ASSERT_TRUE(table->Append(a, {5}).ok());
  for (const int64_t count : {int64_t{4}, int64_t{1} << 40, std::numeric_limits<int64_t>::max()}) {
    const absl::Status status = table->CheckAppend(a, count);
    EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange) << count << ": " << status;
    EXPECT_NE(status.message().find("max_seq_len 4"), std::string::npos) << status.message();
  }
  EXPECT_TRUE(table->CheckAppend(a, 3).ok());
}

// A negative count is refused by the check itself, naming the count and the request, rather
// than passed on to the slot allocator.
TEST(RequestTableTest, NegativeAppendCountsAreInvalid) {
  const std::unique_ptr<RequestTable> table = *RequestTable::Create(1, 4, 16);
  const int32_t a = *table->AllocateRequest();
  const absl::Status status = table->CheckAppend(a, -5);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("count = -5 appended to request 0"), std::string::npos)
      << status.message();
}

// Truncate keeps a row's first tokens; later appends continue from there.
TEST(RequestTableTest, TruncateKeepsThePrefix) {
  const std::unique_ptr<RequestTable> table = *RequestTable::Create(2, 8, 1 << 20);
  const int32_t a = *table->AllocateRequest();
  ASSERT_TRUE(table->Append(a, {11, 12, 13, 14}).ok());
  ASSERT_TRUE(table->Truncate(a, 2).ok());
  EXPECT_EQ(table->Length(a), 2);
  ASSERT_TRUE(table->Append(a, {21}).ok());
  EXPECT_EQ(std::vector<int32_t>(table->Tokens(a).begin(), table->Tokens(a).end()),
            (std::vector<int32_t>{11, 12, 21}));
  ASSERT_TRUE(table->Truncate(a, 3).ok());  // its own length: nothing dropped
  ASSERT_TRUE(table->Truncate(a, 0).ok());
  EXPECT_EQ(table->Length(a), 0);
  // Refused, changing nothing: past the row, negative, a request not live.
  ASSERT_TRUE(table->Append(a, {31, 32}).ok());
  const absl::Status past = table->Truncate(a, 3);
  EXPECT_EQ(past.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(past.message(),
            "length = 3 to truncate request 0 to is invalid: must be in [0, 2] "
            "(its tokens)");
  EXPECT_EQ(table->Truncate(a, -1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table->Truncate(1, 0).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(table->Truncate(2, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table->Length(a), 2);
}

// After a truncation the mirror counts only the prefix it has, and the next sync sends the
// row's new tokens over the dropped ones.
TEST(RequestTableTest, DeviceMirrorFollowsATruncation) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  const std::unique_ptr<RequestTable> table = *RequestTable::Create(2, 8, 1 << 20);
  ASSERT_TRUE(table->EnableDeviceMirror().ok());
  const int32_t a = *table->AllocateRequest();
  ASSERT_TRUE(table->Append(a, {11, 12, 13, 14}).ok());
  ASSERT_TRUE(table->SyncToDevice(nullptr).ok());
  EXPECT_EQ(table->SyncedLength(a), 4);
  ASSERT_TRUE(table->Truncate(a, 1).ok());
  EXPECT_EQ(table->SyncedLength(a), 1);
  ASSERT_TRUE(table->Append(a, {22, 23}).ok());
  ASSERT_TRUE(table->SyncToDevice(nullptr).ok());
  EXPECT_EQ(table->SyncedLength(a), 3);
  std::vector<int32_t> device(3);
  ASSERT_EQ(cudaMemcpy(device.data(), table->device_table() + a * 8, 3 * 4, cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_EQ(device, (std::vector<int32_t>{11, 22, 23}));
}

TEST(RequestTableTest, DeviceMirrorFollowsAppends) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  const std::unique_ptr<RequestTable> table = *RequestTable::Create(3, 8, 1 << 20);
  ASSERT_TRUE(table->EnableDeviceMirror().ok());
  const int32_t a = *table->AllocateRequest();
  const int32_t b = *table->AllocateRequest();
  ASSERT_TRUE(table->Append(a, {11, 12, 13}).ok());
  ASSERT_TRUE(table->Append(b, {21}).ok());
  ASSERT_TRUE(table->SyncToDevice(nullptr).ok());
  ASSERT_TRUE(table->Append(a, {14}).ok());
  ASSERT_TRUE(table->FreeRequest(b).ok());
  const int32_t c = *table->AllocateRequest();  // reuses b's row
  ASSERT_TRUE(table->Append(c, {31, 32}).ok());
  ASSERT_TRUE(table->SyncToDevice(nullptr).ok());
  std::vector<int32_t> device(3 * 8);
  ASSERT_EQ(
      cudaMemcpy(device.data(), table->device_table(), device.size() * 4, cudaMemcpyDeviceToHost),
      cudaSuccess);
  for (int32_t r : {a, c}) {
    for (int32_t t = 0; t < table->Length(r); ++t) {
      EXPECT_EQ(device[r * 8 + t], table->Tokens(r)[t]) << "request " << r << " token " << t;
    }
  }
}

// SyncToDevice waits on the host, so a capturing stream is refused before anything is sent or
// recorded: the rows stay unsent, and a sync after the capture sends them.
TEST(RequestTableTest, SyncOnACapturingStreamIsRefusedAndLaterSyncsWork) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  const std::unique_ptr<RequestTable> table = *RequestTable::Create(2, 8, 1 << 20);
  ASSERT_TRUE(table->EnableDeviceMirror().ok());
  const int32_t a = *table->AllocateRequest();
  ASSERT_TRUE(table->Append(a, {11, 12, 13}).ok());
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  for (const cudaStreamCaptureMode mode :
       {cudaStreamCaptureModeGlobal, cudaStreamCaptureModeRelaxed}) {
    ASSERT_EQ(cudaStreamBeginCapture(stream, mode), cudaSuccess);
    const absl::Status status = table->SyncToDevice(stream);
    cudaGraph_t graph = nullptr;
    ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess) << "the capture was broken";
    if (graph != nullptr) cudaGraphDestroy(graph);
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
    EXPECT_NE(status.message().find("being captured"), std::string::npos) << status.message();
    EXPECT_EQ(table->SyncedLength(a), 0);
  }
  ASSERT_TRUE(table->SyncToDevice(stream).ok());
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(table->SyncedLength(a), 3);
  std::vector<int32_t> device(3);
  ASSERT_EQ(cudaMemcpy(device.data(), table->device_table() + a * 8, 3 * 4, cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_EQ(device, (std::vector<int32_t>{11, 12, 13}));
  ASSERT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

// A slot outside the pool would give the row wrong values (the cuda backend reads it clamped
// into the pool; the cpu backend refuses it at Run), and slot 0 holds whatever padded rows
// wrote last: Append refuses both, naming the slot, and keeps the row as it was.
TEST(RequestTableTest, SlotsOutsideThePoolAndTheReservedSlotAreRejected) {
  const std::unique_ptr<RequestTable> table = *RequestTable::Create(2, 8, 16);
  const int32_t a = *table->AllocateRequest();
  ASSERT_TRUE(table->Append(a, {1, 15}).ok());
  for (const std::vector<int32_t>& bad :
       {std::vector<int32_t>{3, 16}, {-1}, {0}, {4, 5, kPaddingSlot}, {4, 5, 1 << 30}}) {
    const absl::Status status = table->Append(a, bad);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    const std::string expected = absl::StrCat("slots[", bad.size() - 1, "] = ", bad.back());
    EXPECT_NE(status.message().find(expected), std::string::npos) << status.message();
    EXPECT_NE(status.message().find("[1, 16) (slot 0 is reserved)"), std::string::npos)
        << status.message();
    EXPECT_EQ(table->Length(a), 2);
  }
  EXPECT_EQ(std::vector<int32_t>(table->Tokens(a).begin(), table->Tokens(a).end()),
            (std::vector<int32_t>{1, 15}));
}

// Arguments outside KvCacheConfig's ranges are refused by name before anything is allocated
// (a 2^31 x 2^31 table would otherwise throw from std::vector).
TEST(RequestTableTest, CreateRefusesArgumentsOutsideTheirRanges) {
  struct Case {
    int32_t max_requests, max_seq_len;
    int64_t num_slots;
    std::string message;
  };
  const std::string sizes_rule =
      " are invalid: each must be >= 1 and their product <= 1073741824 (kMaxRequestTableEntries)";
  const std::string slots_rule =
      " is invalid: must be in [2, 2147483647] (the reserved slot 0 and 1 to kMaxCapacitySlots "
      "more)";
  const Case cases[] = {
      {0, 8, 16, "RequestTable max_requests = 0, max_seq_len = 8" + sizes_rule},
      {4, -1, 16, "RequestTable max_requests = 4, max_seq_len = -1" + sizes_rule},
      {1 << 30, 2, 16, "RequestTable max_requests = 1073741824, max_seq_len = 2" + sizes_rule},
      {INT32_MAX, INT32_MAX, 16,
       "RequestTable max_requests = 2147483647, max_seq_len = 2147483647" + sizes_rule},
      {4, 8, 1, "RequestTable num_slots = 1" + slots_rule},
      {4, 8, -5, "RequestTable num_slots = -5" + slots_rule},
      {4, 8, int64_t{1} << 31, "RequestTable num_slots = 2147483648" + slots_rule},
  };
  for (const Case& c : cases) {
    const absl::Status status =
        RequestTable::Create(c.max_requests, c.max_seq_len, c.num_slots).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_EQ(status.message(), c.message);
  }
  // The limits themselves are accepted.
  EXPECT_TRUE(RequestTable::Create(1, 1, 2).ok());
}

// A table within the ranges whose host arrays do not fit gives ResourceExhausted with the
// bytes it needed.
TEST(RequestTableTest, TableThatDoesNotFitIsResourceExhausted) {
  absl::Status status;
  {
    ScopedAddressSpaceCap cap(int64_t{256} << 20);
    if (!cap.active()) GTEST_SKIP() << "cannot cap the address space here";
    status = RequestTable::Create(1 << 15, 1 << 15, 16).status();  // 4 GiB of table
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_EQ(status.message(),
            absl::StrCat("cannot allocate ", RequestTable::HostBytes(1 << 15, 1 << 15),
                         " bytes of host memory for the request table (max_requests = 32768, "
                         "max_seq_len = 32768)"));
}

// Bad request indices are refused by name and change nothing.
TEST(RequestTableTest, RequestIndicesOutOfRangeAreInvalidArgument) {
  const std::unique_ptr<RequestTable> table = *RequestTable::Create(2, 4, 16);
  const int32_t a = *table->AllocateRequest();
  ASSERT_TRUE(table->Append(a, {3}).ok());
  for (const int32_t bad : {-1, 2, INT32_MAX}) {
    const std::string message = absl::StrCat("request ", bad, " is out of range [0, 2)");
    EXPECT_EQ(table->Append(bad, {4}).message(), message);
    EXPECT_EQ(table->FreeRequest(bad).message(), message);
    EXPECT_FALSE(table->IsLive(bad));
    EXPECT_EQ(table->Length(bad), 0);
    EXPECT_TRUE(table->Tokens(bad).empty());
  }
  EXPECT_EQ(table->live_count(), 1);
  EXPECT_EQ(table->Length(a), 1);
}

// More entries in one sync than the staging buffer holds, over many requests, with rows
// freed and reused in between.
TEST(RequestTableTest, LargeSyncsGoThroughStagingInPieces) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  const std::unique_ptr<RequestTable> table = *RequestTable::Create(40, 4000, 1 << 20);
  ASSERT_TRUE(table->EnableDeviceMirror().ok());
  std::vector<int32_t> requests;
  int32_t next_slot = 1;
  for (int i = 0; i < 40; ++i) {
    requests.push_back(*table->AllocateRequest());
    std::vector<int32_t> slots(1000 + 50 * i);
    for (int32_t& s : slots) s = next_slot++;
    ASSERT_TRUE(table->Append(requests.back(), slots).ok());
  }
  ASSERT_TRUE(table->SyncToDevice(nullptr).ok());  // about 79,000 entries
  ASSERT_TRUE(table->FreeRequest(requests[3]).ok());
  const int32_t reused = *table->AllocateRequest();
  ASSERT_TRUE(table->Append(reused, std::vector<int32_t>(7, 424242)).ok());
  for (int i = 0; i < 40; i += 5) {
    if (requests[i] != requests[3]) {
      ASSERT_TRUE(table->Append(requests[i], {5, 6}).ok());
    }
  }
  ASSERT_TRUE(table->SyncToDevice(nullptr).ok());
  std::vector<int32_t> device(40 * 4000);
  ASSERT_EQ(
      cudaMemcpy(device.data(), table->device_table(), device.size() * 4, cudaMemcpyDeviceToHost),
      cudaSuccess);
  for (int32_t r = 0; r < 40; ++r) {
    if (!table->IsLive(r)) continue;
    for (int32_t t = 0; t < table->Length(r); ++t) {
      ASSERT_EQ(device[r * 4000 + t], table->Tokens(r)[t]) << "request " << r << " token " << t;
    }
  }
}

}  // namespace
}  // namespace int4kv
