// KvCache: creation errors, and the calls that keep the slot allocator and the request
// table in step.
#include "kv_cache/kv_cache.h"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kv_cache/kv_cache_config.h"
#include "kv_cache/testing/address_space_cap.h"

namespace int4kv {
namespace {

KvCacheConfig SmallConfig(int64_t capacity_slots = 32, int32_t max_requests = 2) {
  KvCacheConfig config;
  config.num_layers = 2;
  config.kv_heads = 2;
  config.head_dim = 32;
  config.group_size = 8;
  config.capacity_slots = capacity_slots;
  config.max_requests = max_requests;
  config.max_seq_len = 16;
  return config;
}

std::unique_ptr<KvCache> SmallCache(int64_t capacity_slots = 32, int32_t max_requests = 2) {
  absl::StatusOr<std::unique_ptr<KvCache>> cache =
      KvCache::Create(SmallConfig(capacity_slots, max_requests), MemoryKind::kHost);
  EXPECT_TRUE(cache.ok()) << cache.status();
  return cache.ok() ? *std::move(cache) : nullptr;
}

std::vector<int32_t> RowOf(const KvCache& cache, int32_t request) {
  const absl::Span<const int32_t> tokens = cache.requests().Tokens(request);
  return std::vector<int32_t>(tokens.begin(), tokens.end());
}

TEST(KvCacheTest, AppendNewSlotsAllocatesAndAppendsInTheRowsOrder) {
  const std::unique_ptr<KvCache> cache = SmallCache();
  ASSERT_NE(cache, nullptr);
  const int32_t request = *cache->requests().AllocateRequest();
  std::vector<int32_t> slots = {99};  // appended to, not replaced
  ASSERT_TRUE(cache->AppendNewSlots(request, 3, &slots).ok());
  ASSERT_TRUE(cache->AppendNewSlots(request, 2, &slots).ok());
  ASSERT_TRUE(cache->AppendNewSlots(request, 1, nullptr).ok());
  const std::vector<int32_t> row = RowOf(*cache, request);
  ASSERT_EQ(row.size(), 6u);
  EXPECT_EQ(slots, std::vector<int32_t>({99, row[0], row[1], row[2], row[3], row[4]}));
  for (const int32_t slot : row) EXPECT_TRUE(cache->slots().IsAllocated(slot)) << slot;
  EXPECT_EQ(cache->slots().used_count(), 6);
}

// Each way the append can fail leaves the allocator handing out the same slots, in the same
// order, as a cache that never saw the failed call. Rows hold at most 16 tokens; once the
// request holds 4 of the 18 slots, 14 are free, so a count can pass either limit alone.
TEST(KvCacheTest, AppendNewSlotsIsAllOrNothing) {
  constexpr int64_t kCapacity = 18;
  constexpr int32_t kFree = 14;
  struct Case {
    const char* what;
    std::function<absl::Status(KvCache&, int32_t request, int32_t other)> fail;
    absl::StatusCode code;
  };
  const Case cases[] = {
      {"past max_seq_len",
       [](KvCache& c, int32_t r, int32_t) { return c.AppendNewSlots(r, 13, nullptr); },
       absl::StatusCode::kOutOfRange},
      {"more slots than are free",
       [](KvCache& c, int32_t, int32_t o) { return c.AppendNewSlots(o, 15, nullptr); },
       absl::StatusCode::kResourceExhausted},
      {"a request that is not live",
       [](KvCache& c, int32_t, int32_t o) {
         EXPECT_TRUE(c.requests().FreeRequest(o).ok());
         return c.AppendNewSlots(o, 2, nullptr);
       },
       absl::StatusCode::kFailedPrecondition},
      {"a negative count",
       [](KvCache& c, int32_t r, int32_t) { return c.AppendNewSlots(r, -1, nullptr); },
       absl::StatusCode::kInvalidArgument},
      // An append that could never succeed says why, even when the slots are not free either:
      // ResourceExhausted would have a scheduler evict other requests for nothing.
      {"past max_seq_len and more slots than are free",
       [](KvCache& c, int32_t r, int32_t) { return c.AppendNewSlots(r, 15, nullptr); },
       absl::StatusCode::kOutOfRange},
      {"a request that is not live and more slots than are free",
       [](KvCache& c, int32_t, int32_t o) {
         EXPECT_TRUE(c.requests().FreeRequest(o).ok());
         return c.AppendNewSlots(o, 15, nullptr);
       },
       absl::StatusCode::kFailedPrecondition},
      {"a count at the int64 limit",
       [](KvCache& c, int32_t r, int32_t) {
         return c.AppendNewSlots(r, std::numeric_limits<int64_t>::max(), nullptr);
       },
       absl::StatusCode::kOutOfRange},
      {"a request out of range and more slots than are free",
       [](KvCache& c, int32_t, int32_t) { return c.AppendNewSlots(2, 15, nullptr); },
       absl::StatusCode::kInvalidArgument},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const std::unique_ptr<KvCache> failed = SmallCache(kCapacity), clean = SmallCache(kCapacity);
    ASSERT_NE(failed, nullptr);
    ASSERT_NE(clean, nullptr);
    int32_t request = 0;
    for (KvCache* cache : {failed.get(), clean.get()}) {
      request = *cache->requests().AllocateRequest();
      ASSERT_TRUE(cache->AppendNewSlots(request, 4, nullptr).ok());
    }
    const int32_t other = *failed->requests().AllocateRequest();
    const absl::Status status = c.fail(*failed, request, other);
    EXPECT_EQ(status.code(), c.code) << status;
    EXPECT_EQ(failed->slots().used_count(), 4);
    EXPECT_EQ(RowOf(*failed, request), RowOf(*clean, request));
    EXPECT_EQ(failed->requests().Length(other), 0);
    // The next slots handed out are the ones the clean cache hands out.
    std::vector<int32_t> next_failed, next_clean;
    ASSERT_TRUE(failed->slots().Allocate(kFree, &next_failed).ok());
    ASSERT_TRUE(clean->slots().Allocate(kFree, &next_clean).ok());
    EXPECT_EQ(next_failed, next_clean);
  }
}

TEST(KvCacheTest, ReleaseRequestFreesTheRowsSlotsAndTheRow) {
  const std::unique_ptr<KvCache> cache = SmallCache();
  ASSERT_NE(cache, nullptr);
  const int32_t a = *cache->requests().AllocateRequest();
  const int32_t b = *cache->requests().AllocateRequest();
  std::vector<int32_t> slots_a, slots_b;
  ASSERT_TRUE(cache->AppendNewSlots(a, 5, &slots_a).ok());
  ASSERT_TRUE(cache->AppendNewSlots(b, 3, &slots_b).ok());
  ASSERT_TRUE(cache->ReleaseRequest(a).ok());
  EXPECT_FALSE(cache->requests().IsLive(a));
  for (const int32_t slot : slots_a) EXPECT_FALSE(cache->slots().IsAllocated(slot)) << slot;
  for (const int32_t slot : slots_b) EXPECT_TRUE(cache->slots().IsAllocated(slot)) << slot;
  EXPECT_EQ(cache->slots().used_count(), 3);
  EXPECT_EQ(RowOf(*cache, b), slots_b);

  // Not live any more, or never: refused, nothing changes.
  EXPECT_EQ(cache->ReleaseRequest(a).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cache->ReleaseRequest(5).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache->slots().used_count(), 3);
  EXPECT_TRUE(cache->requests().IsLive(b));
}

// Rejected speculative tokens: the row keeps its prefix, the dropped slots go back to the
// allocator, and the next tokens take them again.
TEST(KvCacheTest, TruncateRequestFreesTheDroppedSlots) {
  const std::unique_ptr<KvCache> cache = SmallCache();
  ASSERT_NE(cache, nullptr);
  const int32_t request = *cache->requests().AllocateRequest();
  std::vector<int32_t> slots;
  ASSERT_TRUE(cache->AppendNewSlots(request, 6, &slots).ok());
  ASSERT_TRUE(cache->TruncateRequest(request, 4).ok());
  EXPECT_EQ(RowOf(*cache, request), std::vector<int32_t>(slots.begin(), slots.begin() + 4));
  EXPECT_EQ(cache->slots().used_count(), 4);
  EXPECT_FALSE(cache->slots().IsAllocated(slots[4]));
  EXPECT_FALSE(cache->slots().IsAllocated(slots[5]));
  std::vector<int32_t> again;
  ASSERT_TRUE(cache->AppendNewSlots(request, 2, &again).ok());
  EXPECT_EQ(cache->requests().Length(request), 6);
  EXPECT_EQ(cache->slots().used_count(), 6);
  // Refused, changing nothing: a length past the row, and a dropped slot the allocator never
  // handed out.
  EXPECT_EQ(cache->TruncateRequest(request, 7).code(), absl::StatusCode::kInvalidArgument);
  const int32_t foreign = 32;
  ASSERT_FALSE(cache->slots().IsAllocated(foreign));
  ASSERT_TRUE(cache->requests().Append(request, {foreign}).ok());
  const absl::Status status = cache->TruncateRequest(request, 5);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(cache->requests().Length(request), 7);
  EXPECT_EQ(cache->slots().used_count(), 6);
}

// A row holding a slot the allocator never handed out (appended through requests()) is
// refused as a whole: its allocated slots stay allocated and the row stays live.
TEST(KvCacheTest, ReleaseRequestOfARowWithForeignSlotsChangesNothing) {
  const std::unique_ptr<KvCache> cache = SmallCache();
  ASSERT_NE(cache, nullptr);
  const int32_t request = *cache->requests().AllocateRequest();
  std::vector<int32_t> slots;
  ASSERT_TRUE(cache->AppendNewSlots(request, 2, &slots).ok());
  const int32_t foreign = 32;  // free: the allocator hands out slot 1 first
  ASSERT_FALSE(cache->slots().IsAllocated(foreign));
  ASSERT_TRUE(cache->requests().Append(request, {foreign}).ok());
  const absl::Status status = cache->ReleaseRequest(request);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("slot 32 (index 2) is not allocated"), std::string::npos)
      << status.message();
  EXPECT_TRUE(cache->requests().IsLive(request));
  EXPECT_EQ(cache->requests().Length(request), 3);
  for (const int32_t slot : slots) EXPECT_TRUE(cache->slots().IsAllocated(slot)) << slot;
}

// A fork shares its parent's prefix: each prefix slot gains a holder, the fork's own tokens
// are its alone, and a slot goes back to the allocator only when the last row holding it lets
// it go, whichever of them goes first.
TEST(KvCacheTest, ForkedRequestsShareTheirPrefixUntilTheLastLetsGo) {
  const std::unique_ptr<KvCache> cache = SmallCache(32, 3);
  ASSERT_NE(cache, nullptr);
  const int32_t parent = *cache->requests().AllocateRequest();
  std::vector<int32_t> p;
  ASSERT_TRUE(cache->AppendNewSlots(parent, 6, &p).ok());
  const absl::StatusOr<int32_t> child = cache->ForkRequest(parent, 4);
  ASSERT_TRUE(child.ok()) << child.status();
  EXPECT_NE(*child, parent);
  EXPECT_EQ(RowOf(*cache, *child), std::vector<int32_t>(p.begin(), p.begin() + 4));
  EXPECT_EQ(cache->slots().used_count(), 6);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(cache->slots().Holders(p[i]), i < 4 ? 2 : 1) << i;
  std::vector<int32_t> c;
  ASSERT_TRUE(cache->AppendNewSlots(*child, 2, &c).ok());
  const std::vector<int32_t> whole = {p[0], p[1], p[2], p[3], c[0], c[1]};
  EXPECT_EQ(RowOf(*cache, *child), whole);
  // An empty fork and a fork of the whole row.
  const absl::StatusOr<int32_t> empty = cache->ForkRequest(parent, 0);
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(cache->requests().Length(*empty), 0);
  ASSERT_TRUE(cache->ReleaseRequest(*empty).ok());
  const absl::StatusOr<int32_t> full = cache->ForkRequest(*child, 6);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(RowOf(*cache, *full), whole);
  ASSERT_TRUE(cache->ReleaseRequest(*full).ok());
  EXPECT_EQ(cache->slots().used_count(), 8);

  // The parent goes first: its last two slots are free, the shared four stay.
  ASSERT_TRUE(cache->ReleaseRequest(parent).ok());
  EXPECT_EQ(cache->slots().used_count(), 6);
  EXPECT_FALSE(cache->slots().IsAllocated(p[4]));
  EXPECT_FALSE(cache->slots().IsAllocated(p[5]));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(cache->slots().Holders(p[i]), 1) << i;
  // The child now holds them alone: truncating it frees what it drops.
  ASSERT_TRUE(cache->TruncateRequest(*child, 2).ok());
  EXPECT_EQ(cache->slots().used_count(), 2);
  for (const int32_t slot : {p[2], p[3], c[0], c[1]}) {
    EXPECT_FALSE(cache->slots().IsAllocated(slot)) << slot;
  }
  ASSERT_TRUE(cache->ReleaseRequest(*child).ok());
  EXPECT_EQ(cache->slots().used_count(), 0);
  EXPECT_EQ(cache->requests().live_count(), 0);
}

// A prefix cache keeps slots beyond the rows that read them by holding them itself
// (slots().Share), and hands them to a new request with AppendSharedSlots.
TEST(KvCacheTest, APrefixHeldOutsideAnyRowOutlivesItsRows) {
  const std::unique_ptr<KvCache> cache = SmallCache();
  ASSERT_NE(cache, nullptr);
  const int32_t first = *cache->requests().AllocateRequest();
  std::vector<int32_t> prefix;
  ASSERT_TRUE(cache->AppendNewSlots(first, 5, &prefix).ok());
  ASSERT_TRUE(cache->slots().Share(prefix).ok());  // the prefix cache's hold
  ASSERT_TRUE(cache->ReleaseRequest(first).ok());
  for (const int32_t slot : prefix) EXPECT_EQ(cache->slots().Holders(slot), 1) << slot;
  const int32_t second = *cache->requests().AllocateRequest();
  ASSERT_TRUE(cache->AppendSharedSlots(second, prefix).ok());
  ASSERT_TRUE(cache->AppendNewSlots(second, 1, nullptr).ok());
  EXPECT_EQ(cache->requests().Length(second), 6);
  ASSERT_TRUE(cache->slots().Free(prefix).ok());  // the prefix cache lets go
  EXPECT_EQ(cache->slots().used_count(), 6);
  ASSERT_TRUE(cache->ReleaseRequest(second).ok());
  EXPECT_EQ(cache->slots().used_count(), 0);
}

// Every way a fork or a shared append can fail leaves the rows, the live count and every
// slot's holders as they were.
TEST(KvCacheTest, ForksAndSharedAppendsAreAllOrNothing) {
  const std::unique_ptr<KvCache> cache = SmallCache(32, 3);
  ASSERT_NE(cache, nullptr);
  const int32_t parent = *cache->requests().AllocateRequest();
  std::vector<int32_t> p;
  ASSERT_TRUE(cache->AppendNewSlots(parent, 14, &p).ok());
  const int32_t released = *cache->requests().AllocateRequest();
  ASSERT_TRUE(cache->ReleaseRequest(released).ok());
  const int32_t free_slot = 32;
  ASSERT_FALSE(cache->slots().IsAllocated(free_slot));
  auto unchanged = [&](const std::string& what) {
    SCOPED_TRACE(what);
    EXPECT_EQ(cache->requests().live_count(), 1);
    EXPECT_EQ(RowOf(*cache, parent), p);
    EXPECT_EQ(cache->slots().used_count(), 14);
    for (const int32_t slot : p) EXPECT_EQ(cache->slots().Holders(slot), 1) << slot;
  };
  absl::StatusOr<int32_t> fork = cache->ForkRequest(parent, 15);
  EXPECT_EQ(fork.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fork.status().message(),
            "prefix_tokens = 15 to fork request 0 is invalid: must be in [0, 14] (its tokens)");
  unchanged("a prefix past the parent's tokens");
  EXPECT_EQ(cache->ForkRequest(parent, -1).status().code(), absl::StatusCode::kInvalidArgument);
  unchanged("a negative prefix");
  EXPECT_EQ(cache->ForkRequest(released, 0).status().code(), absl::StatusCode::kFailedPrecondition);
  unchanged("a parent that is not live");
  EXPECT_EQ(cache->ForkRequest(7, 0).status().code(), absl::StatusCode::kInvalidArgument);
  unchanged("a parent out of range");

  // Shared appends into a second row.
  const int32_t other = *cache->requests().AllocateRequest();
  ASSERT_TRUE(cache->AppendSharedSlots(other, {p[0], p[1]}).ok());
  ASSERT_TRUE(cache->ReleaseRequest(other).ok());
  unchanged("a shared append, then its release");
  const int32_t row = *cache->requests().AllocateRequest();
  absl::Status status = cache->AppendSharedSlots(row, {p[0], free_slot});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(cache->requests().Length(row), 0);
  status = cache->AppendSharedSlots(row, {p[0], 0});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(cache->requests().Length(row), 0);
  ASSERT_TRUE(cache->AppendNewSlots(row, 14, nullptr).ok());
  status = cache->AppendSharedSlots(row, {p[0], p[1], p[2]});  // 17 tokens > max_seq_len 16
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange) << status;
  EXPECT_EQ(cache->requests().Length(row), 14);
  ASSERT_TRUE(cache->ReleaseRequest(row).ok());
  unchanged("shared appends of a free slot, of slot 0 and past max_seq_len");

  // No free row: the fork is ResourceExhausted.
  const int32_t second = *cache->requests().AllocateRequest();
  const int32_t third = *cache->requests().AllocateRequest();
  fork = cache->ForkRequest(parent, 3);
  EXPECT_EQ(fork.status().code(), absl::StatusCode::kResourceExhausted) << fork.status();
  ASSERT_TRUE(cache->ReleaseRequest(second).ok());
  ASSERT_TRUE(cache->ReleaseRequest(third).ok());
  unchanged("no free row");

  // A shared append to a row that is not live names that first, whatever its slots.
  EXPECT_EQ(cache->AppendSharedSlots(released, {free_slot}).code(),
            absl::StatusCode::kFailedPrecondition);
  unchanged("a shared append of a free slot to a row that is not live");

  // A slot at kMaxSlotHolders.
  for (int32_t i = 1; i < kMaxSlotHolders; ++i) ASSERT_TRUE(cache->slots().Share({p[2]}).ok());
  fork = cache->ForkRequest(parent, 5);
  EXPECT_EQ(fork.status().code(), absl::StatusCode::kResourceExhausted) << fork.status();
  EXPECT_EQ(cache->requests().live_count(), 1);
  EXPECT_EQ(cache->slots().Holders(p[1]), 1);
  EXPECT_EQ(cache->slots().Holders(p[2]), kMaxSlotHolders);
}

// A fork that fails claims no row, so the next request gets the row it would have got: rows
// are claimed in order at first, and a row claimed and given back would go to the end.
TEST(KvCacheTest, AFailedForkLeavesTheFreeRowsInOrder) {
  const std::unique_ptr<KvCache> cache = SmallCache(32, 3);
  ASSERT_NE(cache, nullptr);
  const int32_t parent = *cache->requests().AllocateRequest();
  ASSERT_EQ(parent, 0);
  std::vector<int32_t> p;
  ASSERT_TRUE(cache->AppendNewSlots(parent, 2, &p).ok());
  for (int32_t i = 1; i < kMaxSlotHolders; ++i) ASSERT_TRUE(cache->slots().Share({p[1]}).ok());
  EXPECT_EQ(cache->ForkRequest(parent, 2).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(cache->slots().Holders(p[0]), 1);
  EXPECT_EQ(*cache->requests().AllocateRequest(), 1);
}

// When several of a fork's errors apply, the prefix's slots are judged before the table's
// rows: a slot the allocator never handed out, or one at the holder limit, is named even when
// no row is free.
TEST(KvCacheTest, ForkErrorsComeInTheirDocumentedOrder) {
  const std::unique_ptr<KvCache> cache = SmallCache(32, 2);
  ASSERT_NE(cache, nullptr);
  const int32_t parent = *cache->requests().AllocateRequest();
  std::vector<int32_t> p;
  ASSERT_TRUE(cache->AppendNewSlots(parent, 2, &p).ok());
  const int32_t foreign = 32;
  ASSERT_FALSE(cache->slots().IsAllocated(foreign));
  ASSERT_TRUE(cache->requests().Append(parent, {foreign}).ok());
  ASSERT_TRUE(cache->requests().AllocateRequest().ok());  // no free row left
  absl::StatusOr<int32_t> fork = cache->ForkRequest(parent, 3);
  EXPECT_EQ(fork.status().code(), absl::StatusCode::kInvalidArgument) << fork.status();
  EXPECT_NE(fork.status().message().find("slot 32 (index 2) is not allocated"), std::string::npos)
      << fork.status();
  for (int32_t i = 1; i < kMaxSlotHolders; ++i) ASSERT_TRUE(cache->slots().Share({p[1]}).ok());
  fork = cache->ForkRequest(parent, 2);
  EXPECT_EQ(fork.status().code(), absl::StatusCode::kResourceExhausted) << fork.status();
  EXPECT_NE(fork.status().message().find("kMaxSlotHolders"), std::string::npos) << fork.status();
  fork = cache->ForkRequest(parent, 1);
  EXPECT_EQ(fork.status().code(), absl::StatusCode::kResourceExhausted) << fork.status();
  EXPECT_EQ(fork.status().message().find("kMaxSlotHolders"), std::string::npos) << fork.status();
  EXPECT_EQ(cache->slots().Holders(p[0]), 1);
  EXPECT_EQ(cache->slots().Holders(p[1]), kMaxSlotHolders);
}

// A config that passes Validate but whose host bookkeeping or pools do not fit gives
// ResourceExhausted naming the structure and the fields that size it; it does not abort.
TEST(KvCacheCreateTest, HostMemoryThatDoesNotFitIsResourceExhausted) {
  struct Case {
    std::function<void(KvCacheConfig&)> size;
    std::string names;
  };
  const Case cases[] = {
      // About 18 GiB of request rows (4 GiB of table, 14 bytes of state per request).
      {[](KvCacheConfig& c) { c.max_requests = 1 << 30, c.max_seq_len = 1; },
       "of host memory for the request table (KvCacheConfig.max_requests = 1073741824, "
       "max_seq_len = 1)"},
      // About 5 GiB of free list and flags, checked before the (larger) pools.
      {[](KvCacheConfig& c) { c.capacity_slots = int64_t{1} << 30; },
       "of host memory for the token slot allocator (KvCacheConfig.capacity_slots = "
       "1073741824)"},
      // About 100 GB of pools behind a few MB of bookkeeping.
      {[](KvCacheConfig& c) {
         c.num_layers = 64, c.kv_heads = 8, c.head_dim = 128, c.capacity_slots = 1 << 20;
       },
       "of host memory for the KV pools (KvCacheConfig.num_layers = 64, kv_heads = 8, "
       "head_dim = 128, group_size = 8, quant_mode = symmetric, capacity_slots = 1048576)"},
  };
  for (const Case& c : cases) {
    KvCacheConfig config = SmallConfig();
    c.size(config);
    ASSERT_TRUE(config.Validate().ok()) << config.Validate();
    absl::Status status;
    {
      ScopedAddressSpaceCap cap(int64_t{256} << 20);
      if (!cap.active()) GTEST_SKIP() << "cannot cap the address space here";
      status = KvCache::Create(config, MemoryKind::kHost).status();
    }
    EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
    EXPECT_NE(status.message().find(c.names), std::string::npos) << status.message();
    EXPECT_EQ(status.message().find("cannot allocate "), 0) << status.message();
  }
  // Nothing is left capped: a normal cache still comes up.
  EXPECT_TRUE(KvCache::Create(SmallConfig(), MemoryKind::kHost).ok());
}

// A MemoryKind cast from an integer that names neither kind is refused before anything is
// allocated. Before, any value but kHost made device pools without the device page table.
TEST(KvCacheTest, AMemoryKindThatIsNeitherIsInvalid) {
  const absl::Status status = KvCache::Create(SmallConfig(), static_cast<MemoryKind>(7)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("MemoryKind = 7"), std::string::npos) << status.message();
}

}  // namespace
}  // namespace int4kv
