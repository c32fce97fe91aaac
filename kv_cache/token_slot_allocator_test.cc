#include "kv_cache/token_slot_allocator.h"

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kv_cache/kv_cache_config.h"
#include "kv_cache/testing/address_space_cap.h"

namespace int4kv {
namespace {

TEST(TokenSlotAllocatorTest, NeverHandsOutSlotZero) {
  const std::unique_ptr<TokenSlotAllocator> allocator = *TokenSlotAllocator::Create(5);
  std::vector<int32_t> slots;
  ASSERT_TRUE(allocator->Allocate(5, &slots).ok());
  std::sort(slots.begin(), slots.end());
  EXPECT_EQ(slots, (std::vector<int32_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(allocator->free_count(), 0);
}

TEST(TokenSlotAllocatorTest, ShortAllocationIsAllOrNothing) {
  const std::unique_ptr<TokenSlotAllocator> allocator = *TokenSlotAllocator::Create(10);
  std::vector<int32_t> slots;
  ASSERT_TRUE(allocator->Allocate(7, &slots).ok());
  std::vector<int32_t> more;
  const absl::Status status = allocator->Allocate(4, &more);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(status.message().find("requested 4"), std::string::npos) << status.message();
  EXPECT_NE(status.message().find("only 3"), std::string::npos) << status.message();
  EXPECT_TRUE(more.empty());
  EXPECT_EQ(allocator->free_count(), 3);
  EXPECT_EQ(allocator->used_count(), 7);
}

TEST(TokenSlotAllocatorTest, BadFreesChangeNothing) {
  const std::unique_ptr<TokenSlotAllocator> allocator = *TokenSlotAllocator::Create(8);
  std::vector<int32_t> slots;
  ASSERT_TRUE(allocator->Allocate(4, &slots).ok());
  const std::vector<std::vector<int32_t>> bad = {
      {slots[0], 0},                   // slot 0 is never allocated
      {slots[1], 9},                   // past capacity
      {slots[2], -1},                  // negative
      {slots[0], slots[1], slots[0]},  // duplicate within one call
  };
  for (const auto& frees : bad) {
    EXPECT_EQ(allocator->Free(frees).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(allocator->free_count(), 4);
    for (int32_t s : slots) EXPECT_TRUE(allocator->IsAllocated(s));
  }
  EXPECT_EQ(allocator->Free({slots[0], slots[1], slots[0]}).message(),
            absl::StrCat("slot ", slots[0], " (index 2) is listed more times than its 1 holder"));
  ASSERT_TRUE(allocator->Free({slots[3]}).ok());
  const absl::Status twice = allocator->Free({slots[3]});  // a double free
  EXPECT_EQ(twice.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(twice.message(),
            absl::StrCat("slot ", slots[3],
                         " (index 0) is not allocated: a double free, or never handed out"));
  EXPECT_EQ(allocator->free_count(), 5);
}

// A capacity outside [1, kMaxCapacitySlots] is refused before anything is allocated: with
// the address space capped at 256 MiB more than is mapped now, a capacity that got past the
// check would fail to allocate (ResourceExhausted) instead of giving InvalidArgument.
TEST(TokenSlotAllocatorTest, CapacityOutsideOneToMaxIsInvalidArgument) {
  EXPECT_EQ(kMaxCapacitySlots, 2147483646);  // the limit the messages below spell out
  for (const int64_t capacity : {int64_t{0}, int64_t{-1}, int64_t{-2}, int64_t{1} << 31,
                                 kMaxCapacitySlots + 1, int64_t{1} << 40}) {
    absl::Status status;
    {
      ScopedAddressSpaceCap cap(int64_t{256} << 20);
      status = TokenSlotAllocator::Create(capacity).status();
    }
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << capacity;
    EXPECT_EQ(status.message(), "TokenSlotAllocator capacity = " + std::to_string(capacity) +
                                    " is invalid: must be in [1, 2147483646] (kMaxCapacitySlots)");
  }
}

// A valid capacity whose free list and flags do not fit gives ResourceExhausted with the
// bytes it needed, and nothing is kept.
TEST(TokenSlotAllocatorTest, CapacityThatDoesNotFitIsResourceExhausted) {
  const int64_t capacity = kMaxCapacitySlots;  // about 12 GiB of free list and holder counts
  absl::Status status;
  {
    ScopedAddressSpaceCap cap(int64_t{256} << 20);
    if (!cap.active()) GTEST_SKIP() << "cannot cap the address space here";
    status = TokenSlotAllocator::Create(capacity).status();
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_EQ(status.message(),
            absl::StrCat(
                "cannot allocate ", TokenSlotAllocator::HostBytes(capacity),
                " bytes of host memory for the token slot allocator (capacity = ", capacity, ")"));
  EXPECT_TRUE(TokenSlotAllocator::Create(16).ok());  // the cap is gone
  // The bytes it names: a 4-byte free-list entry and a 2-byte holder count for each slot, and
  // the reserved slot 0's count.
  EXPECT_EQ(TokenSlotAllocator::HostBytes(10), 62);
}

// Bad arguments to Allocate change nothing and name the problem.
TEST(TokenSlotAllocatorTest, NegativeCountOrNullListIsInvalidArgument) {
  const std::unique_ptr<TokenSlotAllocator> allocator = *TokenSlotAllocator::Create(4);
  std::vector<int32_t> slots = {42};
  absl::Status status = allocator->Allocate(-1, &slots);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "slot count -1 is negative");
  status = allocator->Allocate(2, nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "the slot list to append to is null");
  EXPECT_EQ(slots, std::vector<int32_t>{42});
  EXPECT_EQ(allocator->free_count(), 4);
}

// Thousands of random allocate / share / free sequences against a model of each slot's
// holders; spoiled calls (a slot out of range, or listed once more than it has holders) must
// change nothing.
TEST(TokenSlotAllocatorTest, RandomSequencesKeepExactCounts) {
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t capacity = 1 + rng() % 300;
    const std::unique_ptr<TokenSlotAllocator> allocator = *TokenSlotAllocator::Create(capacity);
    std::map<int32_t, int32_t> holders;  // allocated slot -> holders
    for (int step = 0; step < 500; ++step) {
      const int action = rng() % 5;
      if (action < 2) {
        const int64_t count = rng() % (capacity / 3 + 2);
        std::vector<int32_t> got;
        const absl::Status status = allocator->Allocate(count, &got);
        if (count > capacity - static_cast<int64_t>(holders.size())) {
          EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
          EXPECT_TRUE(got.empty());
        } else {
          ASSERT_TRUE(status.ok());
          ASSERT_EQ(static_cast<int64_t>(got.size()), count);
          for (int32_t s : got) {
            ASSERT_GE(s, 1);
            ASSERT_LE(s, capacity);
            ASSERT_TRUE(holders.emplace(s, 1).second) << "slot " << s << " handed out twice";
          }
        }
      } else if (!holders.empty()) {
        const bool share = action == 2;
        std::vector<int32_t> listed;
        for (const auto& [s, n] : holders) {
          const int32_t times = static_cast<int32_t>(share ? rng() % 3 : rng() % (n + 1));
          for (int32_t k = 0; k < times; ++k) listed.push_back(s);
        }
        std::shuffle(listed.begin(), listed.end(), rng);
        const bool spoil = rng() % 4 == 0;
        if (spoil) {
          if (rng() % 2 != 0) {
            listed.push_back(rng() % 2 ? 0 : static_cast<int32_t>(capacity + 1));
          } else if (!share) {  // one more than the slot's holders
            const int32_t s = holders.begin()->first;
            const int64_t already = std::count(listed.begin(), listed.end(), s);
            for (int64_t k = already; k <= holders.begin()->second; ++k) listed.push_back(s);
          } else {  // a free slot, if any
            for (int32_t s = 1; s <= capacity; ++s) {
              if (holders.count(s) == 0) {
                listed.push_back(s);
                break;
              }
            }
          }
        }
        const bool spoiled =
            spoil && std::any_of(listed.begin(), listed.end(), [&](int32_t s) {
              return holders.count(s) == 0 ||
                     (!share && std::count(listed.begin(), listed.end(), s) > holders.at(s));
            });
        const absl::Status status = share ? allocator->Share(listed) : allocator->Free(listed);
        if (spoiled) {
          EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
        } else {
          ASSERT_TRUE(status.ok()) << status;
          for (int32_t s : listed) {
            if (share) {
              ++holders[s];
            } else if (--holders[s] == 0) {
              holders.erase(s);
            }
          }
        }
      }
      ASSERT_EQ(allocator->used_count(), static_cast<int64_t>(holders.size()));
      ASSERT_EQ(allocator->free_count(), capacity - static_cast<int64_t>(holders.size()));
      for (int32_t s = 1; s <= capacity; ++s) {
        const auto it = holders.find(s);
        ASSERT_EQ(allocator->Holders(s), it == holders.end() ? 0 : it->second) << "slot " << s;
      }
    }
  }
}

// A shared slot stays allocated, and out of the free list, until its last holder frees it;
// then it is the next slot handed out.
TEST(TokenSlotAllocatorTest, ASharedSlotReturnsWithItsLastHolder) {
  const std::unique_ptr<TokenSlotAllocator> allocator = *TokenSlotAllocator::Create(4);
  std::vector<int32_t> slots;
  ASSERT_TRUE(allocator->Allocate(3, &slots).ok());
  ASSERT_TRUE(allocator->Share({slots[0], slots[0], slots[1]}).ok());
  EXPECT_EQ(allocator->Holders(slots[0]), 3);
  EXPECT_EQ(allocator->Holders(slots[1]), 2);
  EXPECT_EQ(allocator->Holders(slots[2]), 1);
  ASSERT_TRUE(allocator->Free({slots[0], slots[1]}).ok());
  EXPECT_EQ(allocator->free_count(), 1);
  EXPECT_TRUE(allocator->IsAllocated(slots[1]));
  // Listed more times than it has holders (2): refused, nothing changes.
  const absl::Status status = allocator->Free({slots[0], slots[0], slots[0]});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            absl::StrCat("slot ", slots[0], " (index 2) is listed more times than its 2 holders"));
  EXPECT_EQ(allocator->Holders(slots[0]), 2);
  EXPECT_EQ(allocator->free_count(), 1);
  ASSERT_TRUE(allocator->Free({slots[0], slots[0]}).ok());
  EXPECT_FALSE(allocator->IsAllocated(slots[0]));
  EXPECT_EQ(allocator->free_count(), 2);
  std::vector<int32_t> next;
  ASSERT_TRUE(allocator->Allocate(1, &next).ok());
  EXPECT_EQ(next, std::vector<int32_t>{slots[0]});
  EXPECT_EQ(allocator->Holders(slots[0]), 1);
}

// Share refuses, changing nothing, a slot out of range, one that is free, and one that would
// pass kMaxSlotHolders, naming it.
TEST(TokenSlotAllocatorTest, BadSharesChangeNothing) {
  const std::unique_ptr<TokenSlotAllocator> allocator = *TokenSlotAllocator::Create(4);
  std::vector<int32_t> slots;
  ASSERT_TRUE(allocator->Allocate(2, &slots).ok());
  const int32_t free_slot = 4;
  ASSERT_FALSE(allocator->IsAllocated(free_slot));
  for (const std::vector<int32_t>& shares : std::vector<std::vector<int32_t>>{
           {slots[0], 0}, {slots[0], 5}, {slots[0], -3}, {slots[0], free_slot}}) {
    const absl::Status status = allocator->Share(shares);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    const int32_t bad = shares[1];
    EXPECT_EQ(status.message(),
              bad == free_slot ? absl::StrCat("slot ", bad,
                                              " (index 1) is not allocated: only a held slot is "
                                              "shared")
                               : absl::StrCat("slot ", bad, " (index 1) is out of range [1, 4]"));
    EXPECT_EQ(allocator->Holders(slots[0]), 1);
    EXPECT_FALSE(allocator->IsAllocated(free_slot));
  }
  for (int32_t i = 1; i < kMaxSlotHolders; ++i) ASSERT_TRUE(allocator->Share({slots[1]}).ok());
  EXPECT_EQ(allocator->Holders(slots[1]), kMaxSlotHolders);
  const absl::Status status = allocator->Share({slots[0], slots[1]});
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_EQ(
      status.message(),
      absl::StrCat("slot ", slots[1], " (index 1) already has 65535 holders (kMaxSlotHolders)"));
  EXPECT_EQ(allocator->Holders(slots[0]), 1);
  EXPECT_EQ(allocator->Holders(slots[1]), kMaxSlotHolders);
}

}  // namespace
}  // namespace int4kv
